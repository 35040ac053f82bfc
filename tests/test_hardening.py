"""Hostile input and damaged files (issue 11): each is refused with one line and exit 2, and
nothing outside the run directory changes."""

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
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
    """The one error line of a command's output (progress lines aside), without a traceback."""
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output and len(output.splitlines()) < 10, output
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


# --- 2 and 4. damaged files of a run directory -----------------------------------------------

TINY = """\
name: tiny
scenario: standalone
device: cpu
data:
  dataset: purchase100-synth
  num_records: 600
  train_size: 100
  nonmember_size: 200
  knowledge: {train_members: 50, train_nonmembers: 50, test_members: 50, test_nonmembers: 50}
training: {epochs: 3}
attack: {attacks: [whitebox, threshold-loss], epochs: 2, kernels: 8}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny stand-alone run (trained and attacked) and its config file."""
    root = tmp_path_factory.mktemp("finished")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(root / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    return config, root / "run"


def swap_members(run: Path) -> None:
    path = run / "splits" / "membership.npz"
    with np.load(path) as f:
        arrays = dict(f)
    arrays["all__target_members"], arrays["all__target_nonmembers"] = (
        arrays["all__target_nonmembers"], arrays["all__target_members"])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def zero_features(run: Path) -> None:
    (path,) = [p for p in (run / "features").rglob("*.npy")
               if "known-members" in str(p) and "gradient" in p.name.lower()][:1] or [
        next(p for p in (run / "features").rglob("*.npy") if p.name != "indices.npy")]
    data = bytearray(path.read_bytes())
    header = 128  # a .npy header of version 1.0 is padded to a multiple of 64 bytes
    data[header:] = bytes(len(data) - header)
    path.write_bytes(bytes(data))


def snapshot_file(run: Path) -> Path:
    return sorted((run / "snapshots").rglob("*.safetensors"))[-1]


def manifest(run: Path) -> Path:
    return next((run / "snapshots").rglob("manifest.json"))


def flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def pickle_snapshot(run: Path) -> None:
    import torch

    path = snapshot_file(run)
    torch.save({"weight": torch.zeros(3)}, path)


def truncate(path: Path, keep: float = 0.5) -> None:
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])


DAMAGE = {  # how the run directory is damaged -> a phrase of the one-line message
    "swapped member and non-member arrays": (swap_members, "membership.npz: changed since"),
    "zeroed feature file": (zero_features, "changed since it was written"),
    "flipped byte in a snapshot": (lambda r: flip_byte(snapshot_file(r)), "corrupted snapshot"),
    "truncated manifest": (lambda r: truncate(manifest(r)), "manifest.json: corrupted snapshot"),
    "empty manifest": (lambda r: manifest(r).write_bytes(b""), "manifest.json: corrupted"),
    "deleted manifest": (lambda r: manifest(r).unlink(), "manifest.json: corrupted snapshot"),
    "deleted snapshot file": (lambda r: snapshot_file(r).unlink(), "corrupted snapshot"),
    "pickle in place of safetensors": (pickle_snapshot, "corrupted snapshot"),
    "truncated knowledge.npz": (lambda r: truncate(r / "splits" / "knowledge.npz"),
                                "knowledge.npz: changed since"),
    "deleted splits checksums": (lambda r: (r / "splits" / "checksums.json").unlink(), None),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_run_directory_stops_with_one_line(tmp_path, finished, case):
    config, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run, symlinks=True)
    (run / "results.json").unlink()  # the attack stage runs again and reads everything
    damage, phrase = DAMAGE[case]
    damage(run)
    (tmp_path / "neighbour.txt").write_text("untouched")
    outside = {k: v for k, v in tree(tmp_path).items() if not k.startswith("run")}
    inside_before = tree(run)
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(run), "--quiet"])
    if phrase is None:  # splits written before checksums: checked by content, then re-attacked
        assert result.exit_code == 0, result.output
        assert (run / "splits" / "checksums.json").exists()
        return
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert line.startswith("error: ") and phrase in line, line
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("run")} == outside
    assert not (run / "results.json").exists()
    after = tree(run)
    assert not [k for k in after if ".tmp" in k], after
    for name, digest in inside_before.items():  # nothing that was there was rewritten
        assert after.get(name) == digest or name.startswith("features"), name
