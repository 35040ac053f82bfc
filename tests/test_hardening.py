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
from fedattack.io import (
    UnsafePath,
    child_dir,
    current_umask,
    inside,
    remove_file,
    remove_tree,
    write_json,
)
from fedattack.runner import discard_unfinished
from tests.readonly import fedattack_read_only

REPO = Path(__file__).resolve().parents[1]


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
    "truncated run.json": (lambda r: truncate(r / "run.json"),
                           "run.json: not valid JSON (Expecting"),
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


# --- 3. caught at validation, before any training --------------------------------------------

SMALL = ("scenario: standalone\ndevice: cpu\ndata: {num_records: 600, train_size: 100, "
         "nonmember_size: 200, knowledge: {train_members: 50, train_nonmembers: 50, "
         "test_members: 50, test_nonmembers: 50}}\n")

GAN_TABULAR = ("federation: {num_participants: 2, rounds: 1}\n"
               "data: {num_records: 1000, train_size: 100, nonmember_size: 200}\n")

AT_VALIDATION = {  # file content -> a phrase of the one-line message
    "non-finite lr": ("training:\n  lr: .inf\n", "training.lr: Input should be a finite number"),
    "nan gamma": ("training:\n  lr_gamma: .nan\n", "training.lr_gamma: Input should be a finite"),
    "boolean rounds": ("federation:\n  rounds: true\n",
                       "federation.rounds: got True; a boolean is not a number"),
    "boolean layer": ("attack:\n  features: {gradients: [true]}\n",
                      "attack.features.gradients: got [True]; a boolean"),
    "rounds 1e30": ("federation:\n  rounds: 1.0e+30\n", "federation.rounds:"),
    "rounds 1e18": ("federation:\n  rounds: 1.0e+18\n",
                    "federation.rounds: Input should be less than or equal to 100000"),
    "huge num_records": ("data:\n  num_records: 1000000000000\n", "data.num_records:"),
    "duplicate key": ("name: x\nseed: 1\nfederation:\n  rounds: 2\nseed: 2\n",
                      "key 'seed' is given twice, on line 2 and line 5"),
    "nested duplicate": ("federation:\n  rounds: 2\n  rounds: 3\n",
                         "key 'rounds' is given twice, on line 2 and line 3"),
    "unknown key hint": ("federation:\n  num_participant: 4\n",
                         "federation.num_participant: unknown key; did you mean "
                         "'num_participants'?"),
    "top-level hint": ("senario: standalone\n", "senario: unknown key; did you mean 'scenario'?"),
    "shadow federated": ("attack:\n  attacks: [shadow]\n",
                         "attack.attacks: the shadow attack is for the standalone scenario"),
    "shadow without data": (SMALL + "attack:\n  attacks: [shadow]\n",
                            "the shadow attack needs data.shadow_size >= 4"),
    "snapshot past last round": ("federation: {rounds: 3}\nattack:\n  snapshots: [2, 4]\n",
                                 "attack.snapshots: [4] are not recorded rounds (the last "
                                 "round is 3"),
    "snapshot not recorded": ("federation: {rounds: 3, record_rounds: [3]}\n"
                              "attack:\n  snapshots: [2]\n", "attack.snapshots: [2] are not"),
    "tiny memory_mb": ("attack:\n  memory_mb: 1.0e-9\n",
                       "attack.memory_mb: Input should be greater than or equal to 1"),
    "memory_mb below one record": (SMALL + "model: {arch: purchase-fc}\nattack:\n  memory_mb: 1\n"
                                   "  features: {gradients: [0, 1, 2]}\n",
                                   "attack.memory_mb: 1 MB does not hold the features of one "
                                   "record"),
    "unknown layer": (SMALL + "attack:\n  features: {gradients: [fc9]}\n",
                      "attack.features.gradients: unknown layer 'fc9'; available:"),
    "layer -99": (SMALL + "attack:\n  features: {gradients: [-99]}\n",
                  "attack.features.gradients: layer index -99 out of range"),
    "kernels 1e9": (SMALL + "attack:\n  kernels: 1000000000\n",
                    "attack.kernels: 1,000,000,000 kernels make the attack network need about"),
    "splits too big": (SMALL.replace("train_size: 100", "train_size: 1000"),
                       "has 600 records but the splits need"),
    "missing dataset files": ("data: {dataset: cifar10, root: ROOT}\nmodel: {arch: alexnet}\n",
                              "cifar10: files data_batch_1.bin"),
    # issue 25, items 9 and 10
    "800 nested lists": ("name: x\nl: " + "[" * 800 + "]" * 800 + "\n",
                         "nested too deeply to read; an experiment or campaign file is a few "
                         "levels deep"),
    "800 nested mappings": ("name: x\nl: " + "{a: " * 800 + "1" + "}" * 800 + "\n",
                            "nested too deeply to read"),
    "40 nested lists": ("name: x\nl: " + "[" * 40 + "]" * 40 + "\n",
                        "nested more than 32 levels deep"),
    "eigenfaces on tabular data": (GAN_TABULAR + "gan: {classifier: eigenfaces}\n",
                                   "gan.classifier: eigenfaces reads images, but "
                                   "purchase100-synth's records have shape (600,)"),
    "gan on tabular data": (GAN_TABULAR + "gan: {victim_class: 3}\n",
                            "gan: the GAN attack generates images, but purchase100-synth"),
    "gan classifier epochs 1e9": ("gan: {classifier_epochs: 1000000000}\n",
                                  "gan.classifier_epochs: Input should be less than or equal to "
                                  "100000"),
    "references 1e8 models": ("attack:\n  attacks: [lira-offline]\n  references: {models: "
                              "100000000}\n", "attack.references.models: Input should be less "
                              "than or equal to 1024"),
    "reference epochs 1e9": ("attack:\n  attacks: [lira-offline]\n  references: {epochs: "
                             "1000000000}\n", "attack.references.epochs: Input should be less "
                             "than or equal to 100000"),
    "reference training beyond the bound": (
        SMALL.replace("nonmember_size: 200", "nonmember_size: 200, shadow_size: 300")
        + "attack:\n  attacks: [lira-offline, rmia-online]\n  references: {models: 1024, "
        "epochs: 100000}\n",
        # offline: (300 shadow + 2 x 50 known) / 2 = 200 records a reference, online with the
        # 100 targets 250; the target: 100 records x 30 epochs
        "attack.references: 1,024 models x 100,000 epochs x 450 records make 4.6e+10 record "
        "passes of training, 15,360,000 times the target model's (3.0e+03); more than 1e+10 "
        "is not run"),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(AT_VALIDATION))
def test_refused_at_validation_with_one_line(tmp_path, monkeypatch, command, case):
    text, phrase = AT_VALIDATION[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text.replace("ROOT", str(tmp_path / "no-data")))
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    result = CliRunner().invoke(app, [command, str(config), *(
        ["--out", str(tmp_path / "run")] if command == "run" else [])])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert line.startswith(f"error: {config}") and phrase in line, line
    assert tree(tmp_path) == before  # nothing written, not even the run directory


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("content", [b"name: caf\xe9\n", b"\x7fELF\x02\x01\x01\x00\x00\x00",
                                     b"name: x\x00\n", bytes(range(256))])
def test_binary_or_non_utf8_yaml_names_the_file(tmp_path, command, content):
    config = tmp_path / "bad.yaml"
    config.write_bytes(content)
    result = CliRunner().invoke(app, [command, str(config), *(
        ["--out", str(tmp_path / "run")] if command == "run" else [])])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert line.startswith(f"error: {config}: not a") and "text" in line, line
    assert not (tmp_path / "run").exists()


def test_download_names_a_command_that_exists(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    result = CliRunner().invoke(app, ["download", "cifar10", "--root", str(tmp_path)])
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert "cannot download cifar10 (Name or service not known)" in line
    assert str(tmp_path / "cifar10") in line
    for name, phrase in [("purchase100-synth", "has no download URL"),
                         ("imagenet", "unknown dataset 'imagenet'")]:
        result = CliRunner().invoke(app, ["download", name])
        assert result.exit_code == 2 and phrase in one_error_line(result.output)


# --- 5. concurrency and leftovers -------------------------------------------------------------


def test_a_second_run_into_a_busy_directory_exits_2_naming_the_holder(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fedattack.io import exclusive\n"
         "with exclusive(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        config = tmp_path / "tiny.yaml"
        config.write_text(TINY)
        before = tree(run)
        result = CliRunner().invoke(app, ["run", str(config), "--out", str(run), "--quiet"])
        assert result.exit_code == 2, result.output
        line = one_error_line(result.output)
        assert f"in use by another fedattack run (pid {holder.pid})" in line, line
        assert tree(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_directory_without_training_is_reclaimed_and_leftovers_cleaned(tmp_path, finished):
    config, original = finished
    run = tmp_path / "run"
    run.mkdir()
    # What a failed pre-flight of another configuration left: its config and splits only.
    (run / "config.yaml").write_text(TINY.replace("seed: 0", "").replace("epochs: 3", "epochs: 5"))
    (run / "splits").mkdir()
    (run / "splits" / "membership.npz").write_bytes(b"stale")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "epochs: 3" in (run / "config.yaml").read_text()
    # A directory holding a training of another configuration is still refused.
    other = tmp_path / "other.yaml"
    other.write_text(TINY.replace("epochs: 3", "epochs: 5"))
    result = CliRunner().invoke(app, ["run", str(other), "--out", str(run), "--quiet"])
    assert result.exit_code == 2 and "different configuration" in one_error_line(result.output)
    # Temporaries a killed run left are cleaned by the next run.
    leftovers = [run / "features" / "all" / ".blackbox-known-members.tmp-abc123",
                 run / ".results.json.x1y2.tmp", run / "snapshots" / "standalone"
                 / ".tmp-model-r0001.safetensors.q9"]
    leftovers[0].mkdir(parents=True)
    (leftovers[0] / "00_output.npy").write_bytes(b"half")
    for path in leftovers[1:]:
        path.write_bytes(b"half")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in leftovers)


def test_results_and_splits_have_the_umask_mode(tmp_path, finished):
    _, run = finished
    expected = 0o666 & ~current_umask()
    for name in ["results.json", "results.md", "run.json", "config.yaml",
                 "splits/membership.npz", "splits/knowledge.npz", "splits/splits.json"]:
        assert (run / name).stat().st_mode & 0o777 == expected, name
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "x.json", {})
        assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


# --- issue 25: read-only run directories, damaged caches, victims no one holds ----------------


@pytest.mark.parametrize("state", ["empty", "trained, not attacked"])
def test_a_read_only_run_directory_stops_run_with_one_line(tmp_path, finished, state):
    config, original = finished
    run = tmp_path / "run"
    if state == "empty":
        run.mkdir()
    else:
        shutil.copytree(original, run, symlinks=True)
        (run / "results.json").unlink()  # the attack stage has to write
        shutil.rmtree(run / "features")
    before = tree(run)
    done = fedattack_read_only(run, ["run", str(config), "--out", str(run), "--quiet"],
                               tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert line.startswith(f"error: cannot write in {run}") and "make it writable" in line, line
    assert tree(run) == before


def test_deploy_local_refuses_a_deeply_nested_file_in_one_line(tmp_path):
    config = tmp_path / "deep.yaml"
    config.write_text("name: x\nl: " + "[" * 800 + "]" * 800 + "\n")
    result = CliRunner().invoke(app, ["deploy-local", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "nested too deeply to read" in one_error_line(result.output)
    assert not (tmp_path / "r").exists()


def rewrite_weights(folder: Path, change) -> None:
    """Change the cached reference weights and write reference.json's checksum for the new
    bytes: the cache still passes its checksum."""
    from fedattack.io import read_json

    weights = folder / "weights.npz"
    with np.load(weights) as f:
        arrays = dict(f)
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    weights.write_bytes(buffer.getvalue())
    meta = read_json(folder / "reference.json")
    write_json(folder / "reference.json",
               {**meta, "weights_sha256": hashlib.sha256(buffer.getvalue()).hexdigest()})


def _nan(arrays):
    arrays["1/classifier.weight"][0, 0] = np.nan


def _drop(arrays):
    del arrays["0/features.0.bias"]


def _reshape(arrays):
    arrays["1/classifier.bias"] = arrays["1/classifier.bias"][:-1]


@pytest.mark.parametrize("change, says", [(_nan, "tensor 1/classifier.weight holds NaN"),
                                          (_drop, "lacks the tensor 0/features.0.bias"),
                                          (_reshape, "tensor 1/classifier.bias has shape [4]")])
def test_a_reference_cache_whose_checksum_was_rewritten_is_refused_naming_it(tmp_path, change,
                                                                             says):
    from fedattack.io import CorruptedFile
    from tests.test_references import blobs, obtain, spec_of

    data = blobs()
    assert obtain(spec_of(data), data, tmp_path).trained
    folder = tmp_path / "references" / spec_of(data).key()
    rewrite_weights(folder, change)
    with pytest.raises(CorruptedFile) as err:
        obtain(spec_of(data), data, tmp_path)
    message = str(err.value)
    assert message.startswith(f"{folder / 'weights.npz'}: ") and says in message, message
    assert f"delete {folder} and run the same command again" in message


def test_a_gan_victim_class_no_participant_holds_is_refused():
    from fedattack.data import make_splits
    from fedattack.experiment import check_against_splits
    from tests.fakes import ArrayDataset

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 50)
    images = ArrayDataset(rng.random((200, 1, 8, 8), np.float32), y, num_classes=4)
    exp = Experiment(name="g", data={"dataset": "mnist", "partition": "by-class",
                                     "train_size": 40, "nonmember_size": 60,
                                     "knowledge": {"train_members": 5, "train_nonmembers": 5,
                                                   "test_members": 5, "test_nonmembers": 5}},
                     federation={"num_participants": 2, "rounds": 1},
                     gan={"attacker": 1, "victim_class": 0}, attack=None)
    splits = make_splits(len(images), exp, images.y)
    holders = {i: set(y[p]) for i, p in enumerate(splits.partitions)}
    only_attacker = next(c for c in range(4) if c in holders[1] and c not in holders[0])
    victim = next(c for c in range(4) if c in holders[0])
    check_against_splits(exp.model_copy(update={"gan": exp.gan.model_copy(
        update={"victim_class": victim})}), images, splits)
    with pytest.raises(ValueError, match=f"gan.victim_class: no participant but the attacker "
                       rf"\(participant 1\) holds a record of class {only_attacker}"):
        check_against_splits(exp.model_copy(update={"gan": exp.gan.model_copy(
            update={"victim_class": only_attacker})}), images, splits)
