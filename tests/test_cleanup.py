"""`fedattack clean` removes the caches of finished runs and nothing else."""

from typer.testing import CliRunner

from fedattack.cleanup import clean_caches
from fedattack.cli import app


def make_run(folder, finished: bool):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "features" / "victim-0").mkdir(parents=True)
    (folder / "features" / "victim-0" / "x.npy").write_bytes(b"\0" * 1000)
    (folder / "snapshots").mkdir()
    (folder / "snapshots" / "m.safetensors").write_bytes(b"1")
    (folder / "run.json").write_text("{}")
    if finished:
        (folder / "results.json").write_text("[]")
        (folder / "results.md").write_text("|")
    return folder


def test_a_finished_runs_cache_goes_and_its_results_stay(tmp_path):
    run = make_run(tmp_path / "run", finished=True)
    removed, skipped = clean_caches(run, dry_run=True)
    assert [r.path for r in removed] == [run / "features"] and removed[0].bytes == 1000
    assert (run / "features").exists()  # dry run
    removed, skipped = clean_caches(run)
    assert not (run / "features").exists() and skipped == []
    for kept in ("run.json", "results.json", "results.md", "snapshots/m.safetensors"):
        assert (run / kept).exists()


def test_in_a_campaign_an_unfinished_attack_keeps_its_cache(tmp_path):
    done = make_run(tmp_path / "camp" / "a", finished=True)
    busy = make_run(tmp_path / "camp" / "b", finished=False)
    result = CliRunner().invoke(app, ["clean", str(tmp_path / "camp")])
    assert result.exit_code == 0, result.output
    assert not (done / "features").exists() and (busy / "features").exists()
    assert "its attack has not finished" in result.output
    assert "removed 1 cache folder(s), 0.0 MB" in result.output


def test_a_folder_without_runs_is_refused_in_one_line(tmp_path):
    (tmp_path / "features").mkdir()
    result = CliRunner().invoke(app, ["clean", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and len(result.output.splitlines()) == 1
    assert (tmp_path / "features").exists()


def test_a_symlinked_cache_is_not_followed(tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    (run / "results.json").write_text("[]")
    (run / "features").symlink_to(outside)
    clean_caches(run)
    assert (outside / "keep.txt").read_text() == "data"
