"""Hostile input and damaged files (issue 11): each is refused with one line and exit 2, and
nothing outside the run directory changes."""

import hashlib
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.config import Experiment
from fedattack.io import UnsafePath, child_dir, inside, remove_file, remove_tree
from fedattack.runner import discard_unfinished


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` with a digest of its content (folders: "dir")."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            found[rel] = "dir"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


# --- 1. path traversal -----------------------------------------------------------------------

BAD_NAMES = ["..", ".", ".hidden", "a/b", "../x", "a\\b", "", "x" * 201]


def experiment_text(name: str) -> str:
    return yaml.safe_dump({"name": name, "scenario": "standalone"})


def campaign_text(campaign: str = "c", entry: str = "a") -> str:
    return yaml.safe_dump({"campaign": campaign, "base": {"scenario": "standalone"},
                           "experiments": [{"name": entry}]})


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("kind", ["experiment", "campaign", "entry"])
@pytest.mark.parametrize("name", BAD_NAMES)
def test_unsafe_names_are_refused_and_nothing_changes(tmp_path, monkeypatch, command, kind, name):
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    (work / "keep.txt").write_text("precious")
    (work / "snapshots").mkdir()
    (work / "run.json").write_text("{}")
    text = {"experiment": lambda: experiment_text(name), "campaign": lambda: campaign_text(name),
            "entry": lambda: campaign_text(entry=name)}[kind]()
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    monkeypatch.chdir(work / "runs")  # `runs/..` would be work/runs, its parent work
    before = tree(tmp_path)
    result = CliRunner().invoke(app, [command, str(config)])
    assert result.exit_code == 2, result.output
    assert "plain folder name" in one_error_line(result.output)
    assert tree(tmp_path) == before


def test_a_name_is_a_single_plain_component():
    for good in ["a", "fc.seed-0", "a..b", "_x", "-x", "x" * 200]:
        assert Experiment(name=good).name == good
    for bad in BAD_NAMES:
        with pytest.raises(ValueError):
            Experiment(name=bad)


@pytest.mark.parametrize("name", ["..", ".", "", ".x", "a/b", "../b", "/etc"])
def test_child_dir_refuses_anything_but_one_component(tmp_path, name):
    with pytest.raises(UnsafePath):
        child_dir(tmp_path, name)
    assert child_dir(tmp_path, "ok") == tmp_path / "ok"


def test_writes_and_deletes_are_proven_inside_the_run_directory(tmp_path):
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    run_dir.mkdir()
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"precious")
    (outside / "run.json").write_text("{}")
    for rel in ["..", "../outside/data.bin", "/etc/passwd", "."]:
        with pytest.raises(UnsafePath):
            inside(run_dir, rel)
    # A symbolic link planted in the run directory does not lead a deletion outside it.
    (run_dir / "snapshots").symlink_to(outside)
    (run_dir / "run.json").symlink_to(outside / "run.json")
    before = tree(outside)
    with pytest.raises(UnsafePath):
        discard_unfinished(run_dir)
    with pytest.raises(UnsafePath):
        remove_tree(run_dir, "snapshots")
    with pytest.raises(UnsafePath):
        remove_file(run_dir, "run.json")
    assert tree(outside) == before
    # Inside, they work.
    (run_dir / "snapshots").unlink()
    (run_dir / "run.json").unlink()
    (run_dir / "snapshots" / "global").mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    discard_unfinished(run_dir)
    assert not (run_dir / "snapshots").exists() and not (run_dir / "run.json").exists()
