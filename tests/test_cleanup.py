"""`fedattack clean` removes the caches of finished runs and nothing else."""

import shutil

import pytest
from typer.testing import CliRunner

from fedattack.cleanup import clean_caches
from fedattack.cli import app
from fedattack.io import RUN_DIR_MARKER
from tests.readonly import fedattack_read_only


def make_run(folder, finished: bool):
    """A run directory as fedattack leaves it (its config.yaml opens with fedattack's line)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(RUN_DIR_MARKER + "name: x\n")
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
    run = make_run(tmp_path / "run", finished=True)
    shutil.rmtree(run / "features")
    (run / "features").symlink_to(outside)
    clean_caches(run)
    assert (outside / "keep.txt").read_text() == "data"


def test_a_relative_run_directory_is_cleaned(tmp_path, monkeypatch):
    run = make_run(tmp_path / "out" / "cc", finished=True)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["clean", "out/cc"])
    assert result.exit_code == 0, result.output
    assert "removed out/cc/features (0.0 MB)" in result.output
    assert not (run / "features").exists() and (run / "results.json").exists()


@pytest.mark.parametrize("config", [None, "name: x\n", "# fedattack run directory\nname: x\n"])
def test_a_folder_fedattack_did_not_write_is_refused_and_kept(tmp_path, config):
    """A user's folder holding a run.json, a results.json and a features/ of its own."""
    folder = make_run(tmp_path / "mine", finished=True)
    (folder / "config.yaml").unlink()
    if config is not None:
        (folder / "config.yaml").write_text(config)
    result = CliRunner().invoke(app, ["clean", str(folder)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {folder} holds no run directory that fedattack wrote"), line
    assert (folder / "features" / "victim-0" / "x.npy").exists()


def test_a_read_only_run_directory_is_refused_in_one_line(tmp_path):
    run = make_run(tmp_path / "run", finished=True)
    done = fedattack_read_only(run, ["clean", str(run)], tmp_path)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot remove the cache in {run} ("), line
    assert "make it writable" in line
    assert (run / "features" / "victim-0" / "x.npy").exists()
