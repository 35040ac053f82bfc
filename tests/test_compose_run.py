"""The deployment in real containers (docker/compose-run.sh): images built here, SuperLink,
SuperNodes and SuperExecs from the compose file with TLS and SuperNode authentication, a shrunk
quickstart through `flwr run`, the run directory copied out and attacked offline.

What it must show: TLS on the SuperLink's port, an unregistered SuperNode refused, the uploads
trained in the containers bit-identical to the participants' training replayed here (so each
SuperNode trained on the simulation's partition), the splits equal to the simulation's, finite
results, and nothing of the deployment left after it, also when the script is stopped mid-way.

Slow: needs a running docker engine and, the first time, root and debootstrap for the base images
(minutes); `make test` leaves it out, .ci/run runs it on its own.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedattack.config import load_experiment
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR, prepare_run
from fedattack.io import read_json
from fedattack.reporting import RESULTS_JSON
from fedattack.snapshots import SnapshotStore
from tests.replay import assert_uploads_replay_and_globals_are_fedavg
from tests.system_tools import needs_docker_engine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600), needs_docker_engine()]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docker" / "compose-run.sh"
ENV = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}


def leftovers(project: str) -> list[str]:
    """Containers, networks and volumes of a compose project still on the engine."""
    found = []
    for args in (["ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
                 ["network", "ls", "-q", "--filter", f"name={project}_"],
                 ["volume", "ls", "-q", "--filter", f"name={project}_"]):
        done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                              timeout=60)
        found += done.stdout.split()
    return found


def project_of(log: str) -> str:
    return re.search(r"compose project (fedattack-run-\d+)", log).group(1)


@pytest.fixture(scope="module")
def compose_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compose") / "run"
    done = subprocess.run(["bash", str(SCRIPT), "-o", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=3300)
    print(done.stdout[-20000:], done.stderr[-5000:])
    return out, done


def test_script_succeeds_and_tears_everything_down(compose_run):
    out, done = compose_run
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert "checks passed" in done.stdout
    assert "torn down: no container, network or volume" in done.stdout
    assert leftovers(project_of(done.stdout)) == []


def test_tls_on_the_superlink_and_the_unregistered_node_refused(compose_run):
    out, done = compose_run
    assert re.search(r"SuperLink answers over TLS: TLSv1\.[23], Verification: OK, "
                     r"Verified peername: superlink", done.stdout)
    assert re.search(r"unregistered SuperNode: stopped with exit code \d+", done.stdout)
    assert "Failed to activate SuperNode" in (out / "deploy" / "intruder.log").read_text()
    assert "plain HTTP to the SuperLink's port gets no answer" in done.stdout
    assert "the SuperLink lists 2 SuperNodes" in done.stdout
    compose_log = (out / "deploy" / "compose.log").read_text()
    assert "No SuperNode found with the given public key" in compose_log
    assert "SuperLink: Uvicorn running on https://0.0.0.0:8000" in done.stdout
    # Who reached the SuperLink's port (TLS only): the ServerApp's SuperExec, both SuperNodes and
    # the flwr CLI on the host.
    clients = done.stdout.split("clients of the SuperLink's TLS port", 1)[1]
    assert "superexec-serverapp (" in clients and "the host (flwr CLI) (" in clients
    for node in (1, 2):
        assert re.search(rf"supernode-{node} \([0-9.]+\): fleet API", clients)


def test_containers_trained_the_simulations_partitions(compose_run):
    out, done = compose_run
    assert done.returncode == 0
    exp = load_experiment(out / "config.yaml")
    assert exp.federation.num_participants == 2 and exp.device == "auto"
    record = read_json(out / RUN_FILE)
    assert record["status"] == "finished"
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1], [0, 1]]
    sim = out.parent / "simulation-splits"
    prepare_run(exp, sim)
    for name in ("membership.npz", "knowledge.npz"):
        want, got = np.load(sim / "splits" / name), np.load(out / "splits" / name)
        assert sorted(want.files) == sorted(got.files)
        for key in want.files:
            assert np.array_equal(want[key], got[key]), key
    store = SnapshotStore(out / SNAPSHOT_DIR)
    assert_uploads_replay_and_globals_are_fedavg(store, exp, rounds=2, participants=2)


def test_secagg_in_the_containers_leaves_the_aggregator_no_upload(compose_run):
    """SecAgg+ in the deployment (issue 14): the ServerApp's SecAggPlusWorkflow against the
    SuperNodes' secaggplus_mod, in the containers; the aggregator's view holds no upload."""
    out, done = compose_run
    assert "SecAgg+ in the containers: checks passed" in done.stdout
    run = out.parent / (out.name + ".secagg")
    exp = load_experiment(run / "config.yaml")
    assert exp.federation.secure_aggregation is not None
    record = read_json(run / RUN_FILE)
    assert record["status"] == "finished"
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1]]
    store = SnapshotStore(run / SNAPSHOT_DIR)
    assert {(r.kind, r.round) for r in store.view("global").records()} == {
        ("global", 0), ("global", 1)}


def test_offline_attack_results_are_finite(compose_run):
    out, done = compose_run
    results = json.loads((out / RESULTS_JSON).read_text())
    asked = load_experiment(out / "config.yaml").attack.attacks  # the quickstart's, shrunk
    assert {"whitebox", "threshold-loss"} <= set(asked)
    assert sorted(r["attack"] for r in results) == sorted(asked)
    for row in results:
        assert row["n_members"] == row["n_nonmembers"] == 100
        assert 0.0 <= row["auc"] <= 1.0 and np.isfinite(row["attack_accuracy"])


def test_stopped_mid_run_it_still_tears_everything_down(compose_run, tmp_path):
    _, first = compose_run
    assert first.returncode == 0  # the images exist now: this run starts in seconds
    proc = subprocess.Popen(["bash", str(SCRIPT), "-o", str(tmp_path / "run")], cwd=ROOT,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "submitted run" in line:
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    code = proc.wait(timeout=600)
    log = "".join(lines)
    assert code == 143, log
    assert "torn down: no container, network or volume" in log
    assert leftovers(project_of(log)) == []
