"""examples/flower-app, a plain Flower PyTorch app (the `flwr new` layout) with fedattack's
recorder and mods, run as its README says: `flwr run .` on Flower's local SuperLink in simulation,
then `fedattack attack RUN_DIR` prints the results table, whose figures are finite.

Slow (a SuperLink, a SuperExec and a Ray simulation); .ci/run runs it explicitly.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.reporting import RESULTS_JSON
from fedattack.snapshots import SnapshotStore
from tests.test_flwr_run import free_port, processes_mentioning, stop, wait_for_run

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower-app"
BIN = Path(sys.executable).parent


def flwr_run(tmp_path: Path, audit: Path, run_dir: Path) -> None:
    """`flwr run .` in the app's folder, to the end of the run (finished:completed)."""
    home = tmp_path / "flwr-home"
    env = {**os.environ, "FLWR_HOME": str(home),
           "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    run_config = f'fedattack-config="{audit}" fedattack-run-dir="{run_dir}" local-epochs=2'
    try:
        started = subprocess.run(
            [str(BIN / "flwr"), "run", ".", "--federation-config", "num-supernodes=4",
             "--run-config", run_config],
            cwd=APP, env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        found = re.search(r"Successfully started run (\d+)", started.stdout)
        assert found, started.stdout + started.stderr
        wait_for_run(BIN / "flwr", found.group(1), APP, env, home)
    finally:
        stop(processes_mentioning(str(home)))


@pytest.mark.slow
def test_flwr_run_then_fedattack_attack_on_the_example_app(tmp_path):
    if sys.platform != "linux":
        pytest.fail("this test finds the SuperLink it started through /proc (Linux)")
    spec = yaml.safe_load((APP / "audit.yaml").read_text())
    spec["python_path"] = [str(APP)]
    spec["attack"] = {"attacks": ["threshold-loss", "blackbox"], "epochs": 10}
    audit = tmp_path / "audit.yaml"
    audit.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "run"
    flwr_run(tmp_path, audit, run_dir)

    record = read_json(run_dir / RUN_FILE)
    assert record["status"] == "finished" and [h["round"] for h in record["history"]] == [
        0, 1, 2, 3]
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1, 2, 3]] * 3
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    assert {(r.round, r.partition) for r in store.records(view="global", kind="upload")} == {
        (r, p) for r in (1, 2, 3) for p in range(4)}

    attacked = subprocess.run([str(BIN / "fedattack"), "attack", str(run_dir), "--quiet"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert attacked.returncode == 0, attacked.stdout + attacked.stderr
    assert "threshold-loss" in attacked.stdout and "blackbox" in attacked.stdout
    rows = read_json(run_dir / RESULTS_JSON)
    assert {r["attack"] for r in rows} == {"threshold-loss", "blackbox"}
    assert all(np.isfinite(r["auc"]) and np.isfinite(r["attack_accuracy"]) for r in rows), rows
