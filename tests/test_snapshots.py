"""The snapshot store: bit-exact, checksummed, atomic, written once, one view per attacker."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fedattack import snapshots
from fedattack.snapshots import SnapshotCorrupted, SnapshotRecord, SnapshotStore, View


def model_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """A state dict with the dtypes a model has, a 0-d BatchNorm counter and odd shapes."""
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "fc.bias": rng.standard_normal(5),  # float64
        "bn.running_mean": np.array([np.nan, np.inf, -0.0, 1e-45], dtype=np.float32),
        "bn.num_batches_tracked": np.array(123456789012, dtype=np.int64),  # 0-d
        "labels": rng.integers(0, 256, size=(7,), dtype=np.uint8),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "mask": np.array([True, False]),
    }


def assert_bit_exact(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_round_trip_is_bit_exact_and_keeps_name_order(tmp_path):
    store = SnapshotStore(tmp_path)
    tensors = model_tensors()
    # Names deliberately not in alphabetical order (safetensors sorts them on disk).
    order = ["labels", "conv.weight", "bn.num_batches_tracked", "fc.bias", "mask", "empty"]
    order += ["bn.running_mean"]
    record = store.write("global", "global", 0, [(n, tensors[n]) for n in order])
    assert record.names == tuple(order)

    arrays = store.read_arrays(record)
    for name, got in zip(order, arrays, strict=True):
        assert_bit_exact(got, tensors[name])
    as_torch = store.read(record)
    assert list(as_torch) == order
    assert as_torch["bn.num_batches_tracked"].shape == torch.Size([])
    assert as_torch["bn.num_batches_tracked"].dtype == torch.int64
    assert as_torch["bn.num_batches_tracked"].item() == 123456789012


def test_torch_state_dict_round_trips(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    model.train()
    model(torch.randn(8, 3))  # bumps num_batches_tracked to 1
    state = model.state_dict()
    state["half"] = torch.arange(3, dtype=torch.bfloat16)
    state["strided"] = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    state["tied"] = state["0.weight"]  # one storage under two names, as tied weights are
    record = SnapshotStore(tmp_path).write("local-2", "upload", 1, state, partition=2)

    got = SnapshotStore(tmp_path).read(record)  # a store re-opened from disk
    assert list(got) == list(state)
    for name, tensor in state.items():
        assert got[name].dtype == tensor.dtype
        assert torch.equal(got[name], tensor)
    assert got["1.num_batches_tracked"].shape == torch.Size([])


def test_non_contiguous_numpy_array_round_trips(tmp_path):
    transposed = np.arange(6.0).reshape(2, 3).T
    store = SnapshotStore(tmp_path)
    record = store.write("standalone", "model", 3, {"w": transposed})
    np.testing.assert_array_equal(store.read_arrays(record)[0], transposed)


def test_layout_and_manifest_fields(tmp_path):
    store = SnapshotStore(tmp_path)
    store.write("global", "global", 0, {"w": np.ones(2, np.float32)})
    up = store.write("global", "upload", 12, {"w": np.ones(2, np.float32)}, partition=3)
    store.write("standalone", "model", 0, {"w": np.ones(2)}, tag="before")

    assert up.file == "global/upload-r0012-p3.safetensors"
    assert (tmp_path / "global" / "global-r0000.safetensors").is_file()
    assert (tmp_path / "standalone" / "model-r0000-before.safetensors").is_file()

    manifest = json.loads((tmp_path / "global" / "manifest.json").read_text())
    entries = manifest["records"]
    assert len(entries) == 2
    entry = entries[1]
    for field in ("view", "kind", "round", "partition", "tag", "file", "sha256"):
        assert field in entry
    assert (entry["kind"], entry["round"], entry["partition"], entry["tag"]) == (
        "upload",
        12,
        3,
        None,
    )
    assert entry["names"] == ["w"]
    assert entry["shapes"] == [[2]]
    assert entry["dtypes"] == ["float32"]
    assert len(entry["sha256"]) == 64
    assert SnapshotRecord.from_json(entry) == up


def test_records_filters_sorting_and_reopen(tmp_path):
    store = SnapshotStore(tmp_path)
    w = {"w": np.zeros(1)}
    for rnd in (2, 1):
        for pid in (1, 0):
            store.write("global", "upload", rnd, w, partition=pid)
        store.write("global", "global", rnd, w)
    store.write("local-0", "sent", 1, w, partition=0)

    reopened = SnapshotStore(tmp_path)
    assert reopened.views() == ["global", "local-0"]
    keys = [(r.view, r.round, r.kind, r.partition) for r in reopened.records()]
    assert keys == [
        ("global", 1, "global", None),
        ("global", 1, "upload", 0),
        ("global", 1, "upload", 1),
        ("global", 2, "global", None),
        ("global", 2, "upload", 0),
        ("global", 2, "upload", 1),
        ("local-0", 1, "sent", 0),
    ]
    assert [r.round for r in reopened.records(kind="upload", partition=1)] == [1, 2]
    assert reopened.records(view="global", round=2, kind="global")[0].kind == "global"
    assert reopened.view("global").rounds() == [1, 2]
    assert reopened.view("local-0").rounds(kind="sent") == [1]
    assert reopened.view("local-0").rounds(kind="upload") == []


def test_tag_filter(tmp_path):
    store = SnapshotStore(tmp_path)
    store.write("standalone", "model", 0, {"w": np.zeros(1)}, tag="before")
    store.write("standalone", "model", 0, {"w": np.ones(1)}, tag="after")
    (after,) = store.view("standalone").records(tag="after")
    assert store.read_arrays(after)[0][0] == 1.0


def test_manifest_cache_sees_later_writes(tmp_path):
    writer, reader = SnapshotStore(tmp_path), SnapshotStore(tmp_path)
    writer.write("global", "global", 0, {"w": np.zeros(1)})
    assert len(reader.records()) == 1  # now cached
    writer.write("global", "global", 1, {"w": np.zeros(1)})
    assert [r.round for r in reader.records()] == [0, 1]


def test_duplicate_write_refused(tmp_path):
    store = SnapshotStore(tmp_path)
    first = store.write("global", "upload", 1, {"w": np.zeros(2)}, partition=0)
    with pytest.raises(ValueError, match="already written"):
        store.write("global", "upload", 1, {"w": np.ones(2)}, partition=0)
    with pytest.raises(ValueError, match="already written"):  # also from another store object
        SnapshotStore(tmp_path).write("global", "upload", 1, {"w": np.ones(2)}, partition=0)
    np.testing.assert_array_equal(store.read_arrays(first)[0], np.zeros(2))
    # A different partition, round or tag is a different snapshot.
    store.write("global", "upload", 1, {"w": np.ones(2)}, partition=1)
    store.write("global", "upload", 2, {"w": np.ones(2)}, partition=0)


def test_write_many_lists_every_snapshot_with_one_manifest_write(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path)
    store.write("global", "global", 0, {"w": np.zeros(2)})
    manifests = []
    real = snapshots.write_atomic

    def counting(path, data, **kw):
        if Path(path).name == snapshots.MANIFEST:
            manifests.append(json.loads(data))
        return real(path, data, **kw)

    monkeypatch.setattr(snapshots, "write_atomic", counting)
    batch = [snapshots.Snapshot("upload", 1, {"w": np.full(2, float(p))}, partition=p)
             for p in (3, 1)] + [snapshots.Snapshot("global", 1, {"w": np.ones(2)})]
    written = store.write_many("global", batch)
    assert len(manifests) == 1 and len(manifests[0]["records"]) == 4
    assert [r.key for r in written] == [("global", "upload", 1, 3, None),
                                        ("global", "upload", 1, 1, None),
                                        ("global", "global", 1, None, None)]
    reopened = SnapshotStore(tmp_path)  # from disk, not from the writer's cache
    assert len(reopened.records(view="global")) == 4
    np.testing.assert_array_equal(reopened.read_arrays(written[0])[0], np.full(2, 3.0))
    assert store.records(view="global") == reopened.records(view="global")
    assert store.write_many("global", []) == []


def test_write_many_refuses_a_repeated_or_written_key_before_writing(tmp_path):
    store = SnapshotStore(tmp_path)
    store.write("global", "upload", 1, {"w": np.zeros(2)}, partition=0)
    twice = [snapshots.Snapshot("upload", 2, {"w": np.zeros(2)}, partition=5)] * 2
    with pytest.raises(ValueError, match="given twice"):
        store.write_many("global", twice)
    again = [snapshots.Snapshot("global", 1, {"w": np.zeros(2)}),
             snapshots.Snapshot("upload", 1, {"w": np.ones(2)}, partition=0)]
    with pytest.raises(ValueError, match="already written"):
        store.write_many("global", again)
    assert [r.key for r in SnapshotStore(tmp_path).records()] == [
        ("global", "upload", 1, 0, None)]
    assert sorted(p.name for p in (tmp_path / "global").iterdir()) == [
        "manifest.json", "upload-r0001-p0.safetensors"]


@pytest.mark.parametrize(
    "args, match",
    [
        (("global", "weights", 0), "kind"),
        (("global", "upload", 0), "partition"),
        (("global", "global", 0, 3), "no partition"),
        (("global", "global", -1), "round"),
        (("../evil", "global", 0), "view"),
        (("global", "global", 0, None, "a/b"), "tag"),
        (("local-1", "upload", 0, 2), "participant 1"),
    ],
)
def test_invalid_keys_refused(tmp_path, args, match):
    view, kind, rnd, *rest = args
    with pytest.raises(ValueError, match=match):
        SnapshotStore(tmp_path).write(view, kind, rnd, {"w": np.zeros(1)}, *rest)
    assert SnapshotStore(tmp_path).records() == []


def test_invalid_tensors_refused(tmp_path):
    store = SnapshotStore(tmp_path)
    with pytest.raises(ValueError, match="duplicate"):
        store.write("global", "global", 0, [("w", np.zeros(1)), ("w", np.ones(1))])
    with pytest.raises(ValueError, match="dtype"):
        store.write("global", "global", 0, {"w": np.array(["a"], dtype=object)})
    assert store.records() == []


def flip_byte(path: Path, offset_from_end: int = 1) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_checksum_failure_detected(tmp_path):
    store = SnapshotStore(tmp_path)
    record = store.write("global", "global", 0, {"w": np.arange(4, dtype=np.float32)})
    flip_byte(tmp_path / record.file)  # a data byte: still a valid safetensors file
    with pytest.raises(SnapshotCorrupted) as info:
        store.read(record)
    assert info.value.path == tmp_path / record.file
    with pytest.raises(SnapshotCorrupted):
        store.view("global").read_arrays(record)


def test_truncated_and_missing_files_detected(tmp_path):
    store = SnapshotStore(tmp_path)
    record = store.write("global", "global", 0, {"w": np.arange(4, dtype=np.float32)})
    path = tmp_path / record.file
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(SnapshotCorrupted):
        store.read_arrays(record)
    path.unlink()
    with pytest.raises(SnapshotCorrupted):
        store.read(record)


def test_checksum_comes_from_the_manifest_not_the_caller(tmp_path):
    store = SnapshotStore(tmp_path)
    record = store.write("global", "global", 0, {"w": np.arange(4, dtype=np.float32)})
    forged = SnapshotRecord(**{**record.__dict__, "sha256": "0" * 64})
    with pytest.raises(ValueError, match="differs"):
        store.read(forged)
    unknown = SnapshotRecord(**{**record.__dict__, "round": 7})
    with pytest.raises(KeyError):
        store.read(unknown)


def test_corrupted_manifest_detected(tmp_path):
    store = SnapshotStore(tmp_path)
    store.write("global", "global", 0, {"w": np.zeros(1)})
    (tmp_path / "global" / "manifest.json").write_text('{"version": 1, "records": [')
    with pytest.raises(SnapshotCorrupted):
        SnapshotStore(tmp_path).records()


def test_views_are_isolated(tmp_path):
    store = SnapshotStore(tmp_path)
    upload = store.write("global", "upload", 1, {"w": np.zeros(1)}, partition=0)
    received = store.write("local-0", "global", 1, {"w": np.ones(1)})

    local = store.view("local-0")
    assert isinstance(local, View)
    assert local.records() == [received]
    np.testing.assert_array_equal(local.read_arrays(received)[0], np.ones(1))
    with pytest.raises(ValueError, match="cannot read"):
        local.read(upload)
    with pytest.raises(ValueError, match="cannot read"):
        local.read_arrays(upload)
    # Relabelling a record does not get around it: the file is still the other view's.
    relabelled = SnapshotRecord(**{**upload.__dict__, "view": "local-0"})
    with pytest.raises((ValueError, KeyError)):
        local.read(relabelled)
    assert store.view("global").records() == [upload]


def test_a_missing_view_is_a_damaged_run_that_lists_the_views_present(tmp_path):
    store = SnapshotStore(tmp_path)
    store.write("global", "global", 0, {"w": np.zeros(1)})
    with pytest.raises(SnapshotCorrupted, match="views present: global"):
        store.view("local-9")


def test_a_deleted_view_folder_fails_the_attack_with_one_line(tmp_path):
    """A finished stand-alone run whose whole snapshots/standalone folder was deleted: the
    attack stops with one line (exit 2) naming the folder, and keeps run.json."""
    from typer.testing import CliRunner

    from fedattack.cli import app

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "scenario": "standalone",
        "data": {"dataset": "purchase100-synth", "num_records": 600, "train_size": 100,
                 "nonmember_size": 200,
                 "knowledge": {"train_members": 20, "train_nonmembers": 20, "test_members": 20,
                               "test_nonmembers": 20}},
        "training": {"epochs": 1}, "attack": {"attacks": ["threshold-loss"]}}))
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["run", str(config), "--out", str(out)]).exit_code == 0
    (out / "results.json").unlink()  # the attack is to be redone from the recorded snapshots
    shutil.rmtree(out / "snapshots" / "standalone")
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "snapshots/standalone" in result.output and "Traceback" not in result.output
    assert (out / "run.json").is_file()


def test_crash_before_manifest_rename_keeps_previous_state(tmp_path, monkeypatch):
    store = SnapshotStore(tmp_path)
    old = store.write("global", "global", 0, {"w": np.zeros(3)})
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith("manifest.json"):
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(snapshots.os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="simulated crash"):
        store.write("global", "global", 1, {"w": np.ones(3)})
    monkeypatch.undo()

    # The tensor file of round 1 reached disk, but no manifest lists it.
    assert (tmp_path / "global" / "global-r0001.safetensors").is_file()
    for reader in (store, SnapshotStore(tmp_path)):
        assert reader.records() == [old]
        np.testing.assert_array_equal(reader.read_arrays(old)[0], np.zeros(3))
    # The orphan does not count as written: the round can be written again.
    redo = store.write("global", "global", 1, {"w": np.full(3, 2.0)})
    np.testing.assert_array_equal(SnapshotStore(tmp_path).read_arrays(redo)[0], np.full(3, 2.0))


CRASH_MID_MANIFEST = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from fedattack.snapshots import SnapshotStore

    store = SnapshotStore(sys.argv[1])
    store.write("global", "global", 0, {"w": np.zeros(3)})

    real_replace = os.replace
    def die_mid_manifest(src, dst):
        # The process dies with the new manifest half written, before it is renamed into place.
        if str(dst).endswith("manifest.json"):
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) // 2)
            os._exit(17)
        return real_replace(src, dst)
    os.replace = die_mid_manifest
    store.write("global", "global", 1, {"w": np.ones(3)})
    """
)


def test_process_killed_mid_manifest_write_leaves_store_readable(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CRASH_MID_MANIFEST, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 17, result.stderr.decode()
    names = {p.name for p in (tmp_path / "global").iterdir()}
    assert "global-r0001.safetensors" in names  # the orphan tensor file
    assert len(names) == 4  # + round 0, the manifest and the half-written temporary manifest

    store = SnapshotStore(tmp_path)
    (old,) = store.records()
    assert old.round == 0
    np.testing.assert_array_equal(store.read_arrays(old)[0], np.zeros(3))


def write_view(root: str, view: str, n: int) -> None:
    store = SnapshotStore(root)
    pid = int(view.removeprefix("local-")) if view.startswith("local-") else None
    for rnd in range(n):
        tensors = {"w": np.full(4, rnd, dtype=np.float32)}
        if pid is None:
            store.write(view, "global", rnd, tensors)
        else:
            store.write(view, "upload", rnd, tensors, partition=pid)


def test_processes_writing_different_views_into_one_root(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    views = ["global", "local-1"]
    procs = [ctx.Process(target=write_view, args=(str(tmp_path), v, 5)) for v in views]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0

    store = SnapshotStore(tmp_path)
    assert store.views() == views
    for view in views:
        records = store.view(view).records()
        assert [r.round for r in records] == list(range(5))
        for r in records:
            np.testing.assert_array_equal(store.read_arrays(r)[0], np.full(4, r.round))


def test_threads_writing_one_view_lose_nothing(tmp_path):
    # Two store objects on the same root, as two components of one process would hold: the lock
    # is per view directory, not per object, so no manifest update is lost.
    stores = [SnapshotStore(tmp_path), SnapshotStore(tmp_path)]

    def write_rounds(first: int) -> None:
        for rnd in range(first, 80, 8):
            stores[first % 2].write("global", "global", rnd, {"w": np.full(2, rnd)})

    threads = [threading.Thread(target=write_rounds, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert SnapshotStore(tmp_path).view("global").rounds() == list(range(80))
