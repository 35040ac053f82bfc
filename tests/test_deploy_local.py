"""A real Flower deployment on 127.0.0.1 with TLS: SuperLink, SuperExecs and one SuperNode per
participant run as processes; the experiment goes in through `flwr run`.

The recorded snapshots and results must be what the simulation test checks: each upload
bit-identical to the participant's training replayed outside Flower, each global model the FedAvg
of the round's uploads. Slow (minutes on two cores): `make test` leaves it out, CI runs this file
on its own (.ci/run).
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedattack import protocol
from fedattack.config import Experiment
from fedattack.deploy import (
    CONNECTION,
    HOST,
    DeployError,
    DeployPaths,
    LocalDeployment,
    deploy_experiment,
    flwr,
)
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.reporting import RESULTS_JSON
from fedattack.results import written
from fedattack.snapshots import SnapshotStore
from tests.replay import assert_uploads_replay_and_globals_are_fedavg
from tests.system_tools import needs

pytestmark = [pytest.mark.slow, needs("openssl", "ssh-keygen")]  # TLS certificates, node keys

DATA = {
    "dataset": "purchase100-synth",
    "num_records": 3000,
    "train_size": 300,
    "nonmember_size": 600,
    "knowledge": {"train_members": 100, "train_nonmembers": 100,
                  "test_members": 100, "test_nonmembers": 100},
}
EXP = Experiment(
    name="deployed",
    seed=5,
    scenario="federated",
    data=DATA,
    model={"arch": "purchase-fc"},
    federation={"num_participants": 2, "rounds": 2, "record_rounds": "all"},
    attack={"attacks": ["whitebox", "threshold-loss"], "epochs": 2, "kernels": 8},
)
TIMEOUT_S = 900


def processes_with_env(assignment: str) -> list[int]:
    """Pids of live processes whose environment holds `assignment` (e.g. FLWR_HOME=...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if assignment.encode() in env:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def deployed_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("deployed") / "run"
    record, results = deploy_experiment(EXP, run_dir, timeout_s=TIMEOUT_S)
    return run_dir, record, results


def test_run_finishes_over_tls_and_every_process_is_stopped(deployed_run):
    run_dir, record, _ = deployed_run
    assert record["status"] == "finished"
    assert read_json(run_dir / RUN_FILE) == record
    assert [h["round"] for h in record["history"]] == [0, 1, 2]
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1], [0, 1]]
    logs = DeployPaths(run_dir).logs
    assert "Uvicorn running on https://127.0.0.1:" in (logs / "superlink.log").read_text()
    for node in (1, 2):
        assert (logs / f"supernode-{node}.log").exists()
    flwr_home = DeployPaths(run_dir).flwr_home
    assert processes_with_env(f"FLWR_HOME={flwr_home}") == []


def test_uploads_bit_identical_to_replayed_clients_and_global_is_fedavg(deployed_run):
    run_dir, _, _ = deployed_run
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    assert len(store.records(view="global", kind="global")) == 3  # rounds 0, 1, 2
    assert_uploads_replay_and_globals_are_fedavg(store, EXP, rounds=2, participants=2)


def test_offline_attack_results(deployed_run):
    run_dir, _, results = deployed_run
    assert read_json(run_dir / RESULTS_JSON) == written(results)
    assert sorted(r["attack"] for r in results) == ["threshold-loss", "whitebox"]
    for row in results:
        assert row["n_members"] == row["n_nonmembers"] == 100
        assert 0.0 <= row["auc"] <= 1.0 and np.isfinite(row["attack_accuracy"])


# --- SuperNode authentication ------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_deployment(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("auth") / "run"
    with LocalDeployment(DeployPaths(run_dir), nodes=2, auth=True, timeout_s=TIMEOUT_S) as dep:
        yield dep


def test_unregistered_supernode_is_refused(auth_deployment, tmp_path):
    dep = auth_deployment
    key = tmp_path / "intruder"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(key)],
                   check=True, timeout=60)
    name = dep.start_supernode(0, key=key, name="intruder")
    assert dep.procs.wait_exit(name, timeout_s=180) != 0
    dep.procs.stop(f"superexec-{name}")
    assert "Failed to activate SuperNode" in dep.procs.log_path(name).read_text()
    link_log = dep.procs.log_path("superlink").read_text()
    assert "No SuperNode found with the given public key" in link_log
    nodes = flwr(["supernode", "list", CONNECTION], dep.env, dep.paths.run_dir)["nodes"]
    assert nodes == []


def test_a_superexec_without_the_secret_is_refused(auth_deployment):
    """A local process posing as the ServerApp's SuperExec, without the secret deploy-local
    shares with the real one, cannot take the run's task (issue 25, item 11)."""
    dep, name = auth_deployment, "rogue-superexec"
    refusal = "SuperExec authentication failed for /flwr.proto.Runtime/AcquireTask"

    def refusals() -> int:
        return dep.procs.log_path("superlink").read_text().count(refusal)

    assert refusals() == 0  # the deployment's own SuperExec signs its requests
    dep.procs.start(name, ["flower-superexec", "--runtime-api-address", f"{HOST}:{dep.link_port}",
                           "--root-certificates", str(dep.paths.certs / "ca.crt")])
    dep.procs.wait_exit(name, timeout_s=180)  # Flower's SuperExec gives up (exit code 0)
    assert refusals() >= 1


def test_the_control_api_answers_any_local_client(auth_deployment, tmp_path):
    """What docs/deployment-security.md says: Flower 1.42 (without Flower Enterprise's OIDC)
    does not authenticate Control API clients; anyone on this machine who trusts the
    (public) CA certificate lists the runs. If this fails, Flower has closed it: update the
    page."""
    dep = auth_deployment
    stranger = tmp_path / "stranger"
    env = {**dep.env, "FLWR_HOME": str(stranger)}
    stranger.mkdir()
    (stranger / "config.toml").write_text(
        (dep.paths.flwr_home / "config.toml").read_text())
    assert flwr(["ls", CONNECTION], env, tmp_path)["success"]


def test_failed_run_is_reported_although_flwr_run_exits_0(auth_deployment, tmp_path):
    dep = auth_deployment
    run_id = dep.submit({protocol.CONFIG_PATH: str(tmp_path / "missing.yaml"),
                         protocol.RUN_DIR: str(tmp_path / "run")})
    with pytest.raises(DeployError, match="finished:failed"):
        dep.wait_finished(run_id)


def test_registered_supernodes_run_the_experiment_under_secagg(auth_deployment):
    """The deployment runs SecAgg+ too (issue 14): Flower's workflow against the SuperNodes'
    secaggplus_mod, over TLS with authenticated nodes; the aggregator's view holds no upload."""
    dep = auth_deployment
    exp = Experiment.model_validate({**EXP.model_dump(), "name": "deployed-auth", "attack": None,
                                     "federation": {**EXP.federation.model_dump(), "rounds": 1,
                                                    "secure_aggregation": True}})
    record = dep.run_experiment(exp)
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1]]
    store = SnapshotStore(dep.paths.run_dir / SNAPSHOT_DIR)
    assert {(r.kind, r.round) for r in store.view("global").records()} == {
        ("global", 0), ("global", 1)}
    nodes = flwr(["supernode", "list", CONNECTION], dep.env, dep.paths.run_dir)["nodes"]
    assert len(nodes) == 2 and {n["status"] for n in nodes} == {"online"}


def test_a_users_model_and_data_load_in_the_supernodes(tmp_path, monkeypatch):
    """Issue 26: the model class and CSV of a project the test writes, named in the YAML with
    python_path, are loaded by every SuperNode's ClientApp and by the ServerApp; the offline
    attack runs the project's attack plug-in."""
    import sys

    import yaml
    from typer.testing import CliRunner

    from fedattack.cli import app
    from tests.test_user_federation import federation
    from tests.user_project import write_project

    monkeypatch.setattr(sys, "path", list(sys.path))
    project = write_project(tmp_path / "project")
    try:
        spec = federation(project)
        spec["federation"]["num_participants"] = 2
        config = tmp_path / "mine.yaml"
        config.write_text(yaml.safe_dump(spec))
        run_dir = tmp_path / "run"
        result = CliRunner().invoke(app, ["deploy-local", str(config), "--out", str(run_dir),
                                          "--timeout", str(TIMEOUT_S)])
        assert result.exit_code == 0, result.output
        uploads = SnapshotStore(run_dir / SNAPSHOT_DIR).view("global")
        first = uploads.records(kind="upload", round=1)
        assert sorted(r.partition for r in first) == [0, 1]
        assert [a.shape for a in uploads.read_arrays(first[0])][:2] == [(8, 6), (8,)]
        rows = read_json(run_dir / RESULTS_JSON)
        assert {r["attack"] for r in rows} == {project.attack, "threshold-loss", "whitebox"}
    finally:
        project.forget()


# --- signals (issue 25, item 6) ------------------------------------------------------------------


def test_sigterm_stops_every_process_of_the_deployment_and_marks_the_run_interrupted(tmp_path):
    """SIGTERM to `fedattack deploy-local` during training: the SuperLink, SuperNodes, SuperExecs
    and the apps they started (sessions of their own) all stop, the command exits 130 with the
    line saying how to resume, and run.json says `interrupted`."""
    import json
    import signal
    import sys
    import time

    import yaml

    run_dir = tmp_path / "run"
    exp = {**EXP.model_dump(mode="json"), "name": "deployed-sigterm", "attack": None,
           "federation": {**EXP.federation.model_dump(mode="json"), "rounds": 30}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    proc = subprocess.Popen([sys.executable, "-m", "fedattack.cli", "deploy-local", "exp.yaml",
                             "--out", str(run_dir)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    flwr_home = f"FLWR_HOME={DeployPaths(run_dir.resolve()).flwr_home}"
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                history = json.loads((run_dir / RUN_FILE).read_text())["history"]
                if any(entry["round"] >= 1 for entry in history):
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(1)
        assert processes_with_env(flwr_home)  # the deployment is up
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
    left = processes_with_env(flwr_home)
    for pid in left:  # leave nothing running, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    stderr = proc.stderr.read()
    assert code == 130, stderr
    assert took < 60, took  # SuperNodes take a few seconds to stop on SIGTERM
    assert left == []
    assert stderr.strip().splitlines()[-1] == "interrupted: run the same command again to resume"
    assert read_json(run_dir / RUN_FILE)["status"] == "interrupted"
