"""A full disk (ENOSPC) during `fedattack run` (issue 11): one line, exit 2, nothing
half-written, and the same command resumes once there is space. The federated case, where the
disk fills inside Flower's server loop, is in tests/test_hostile_participants.py (slow)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.snapshots import SnapshotStore
from tests.fakes import tiny_data, tiny_experiment
from tests.test_hostile_participants import FULL_DISK_FROM_ROUND_2

EXPERIMENT = yaml.safe_dump(tiny_experiment(
    "full-disk", "standalone", data=tiny_data(200, 50, num_records=3000), device="cpu",
    training={"epochs": 3}))


def fedattack_run(cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    script = textwrap.dedent("""
        import sys
        {prelude}
        from fedattack.cli import main
        sys.argv = ["fedattack", "run", "exp.yaml", "--out", "run", "--quiet"]
        main()
    """).format(prelude=prelude)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_a_full_disk_stops_with_one_line_and_the_same_command_resumes(tmp_path):
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    # the disk fills when the model after epoch 2 is being recorded
    full = fedattack_run(tmp_path, prelude=FULL_DISK_FROM_ROUND_2)
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    (line,) = full.stderr.strip().splitlines()
    assert line.startswith("error: no space left on device") and "run the same command" in line
    run_dir = tmp_path / "run"
    assert not (run_dir / RUN_FILE).exists() or read_json(run_dir / RUN_FILE)["status"] != \
        "finished"
    assert [p.name for p in run_dir.rglob("*") if ".tmp" in p.name] == []
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    for rec in store.records():
        store.read_arrays(rec)  # what was written before the disk filled is whole
    again = fedattack_run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_json(run_dir / RUN_FILE)["status"] == "finished"
