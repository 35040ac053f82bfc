"""The pieces of the deployment that need no Flower processes: certificates and keys, stopping
process sessions, and the command line's answers to bad input."""

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.deploy import CERT_SCRIPT, DeployError, ProcessGroup
from tests.system_tools import needs


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CERT_SCRIPT), *args], capture_output=True, text=True,
                          timeout=120)


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True,
                          timeout=60).stdout


@needs("openssl", "ssh-keygen")
def test_certificates_chain_to_the_ca_with_the_sans_and_node_keys(tmp_path):
    certs = tmp_path / "certs"
    done = run_script("-o", str(certs), "-n", "3", "-s", "DNS:link.example.org", "-s",
                      "IP:10.0.0.5")
    assert done.returncode == 0, done.stderr
    assert "OK" in openssl("verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.pem"))
    sans = openssl("x509", "-in", str(certs / "server.pem"), "-noout", "-ext", "subjectAltName")
    for san in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:superlink",
                "DNS:link.example.org", "IP Address:10.0.0.5"):
        assert san in sans
    for node in (1, 2, 3):
        fingerprint = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(certs / "keys" / f"supernode-{node}.pub")],
            check=True, capture_output=True, text=True, timeout=60).stdout
        assert fingerprint.startswith("384 ") and "(ECDSA)" in fingerprint
    assert not (certs / "keys" / "supernode-4").exists()


@needs("openssl", "ssh-keygen")
def test_certificate_script_never_overwrites_a_ca_and_rejects_bad_counts(tmp_path):
    assert run_script("-o", str(tmp_path), "-n", "1").returncode == 0
    again = run_script("-o", str(tmp_path), "-n", "1")
    assert again.returncode == 2 and "exists" in again.stderr
    bad = run_script("-o", str(tmp_path / "other"), "-n", "two")
    assert bad.returncode == 2 and bad.stderr.startswith("error: -n takes a number")


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_stopping_a_process_stops_what_it_spawned(tmp_path, monkeypatch):
    monkeypatch.setattr("fedattack.deploy.STOP_GRACE_S", 2.0)
    procs = ProcessGroup(dict(os.environ), tmp_path / "logs")
    pid_file = tmp_path / "child.pid"
    # A parent that ignores SIGTERM, with a child of its own, as a SuperExec and its ClientApp.
    procs.start("parent", ["bash", "-c", f"trap '' TERM; sleep 300 & echo $! > {pid_file}; wait"])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    parent, child = procs.procs["parent"].pid, int(pid_file.read_text())
    procs.check_alive()
    procs.stop_all()
    assert not alive(parent) and not alive(child)
    assert procs.procs == {}


def test_a_process_that_dies_fails_the_deployment_with_its_log(tmp_path):
    procs = ProcessGroup(dict(os.environ), tmp_path / "logs")
    procs.start("superlink", ["bash", "-c", "echo cannot bind >&2; exit 3"])
    procs.procs["superlink"].wait(timeout=30)
    with pytest.raises(DeployError, match=r"superlink exited with code 3; see .*superlink\.log"):
        procs.check_alive()
    assert "cannot bind" in procs.log_path("superlink").read_text()
    procs.stop_all()


def test_deploy_local_refuses_a_standalone_experiment_in_one_line(tmp_path):
    config = tmp_path / "standalone.yaml"
    config.write_text(yaml.safe_dump({"name": "alone", "scenario": "standalone"}))
    result = CliRunner().invoke(app, ["deploy-local", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: deploy-local runs federated experiments; alone is standalone")
    assert not (tmp_path / "r").exists()


def write_project(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    return folder


def test_the_app_submitted_is_the_installed_project_and_another_checkout_is_refused(tmp_path):
    from fedattack.deploy import PROJECT_ROOT, AppMismatch, app_root

    assert app_root(PROJECT_ROOT / "fedattack") == PROJECT_ROOT
    assert app_root(tmp_path) == PROJECT_ROOT  # outside any checkout: the installed one
    assert app_root(write_project(tmp_path / "other", "someone-else") / "sub") == PROJECT_ROOT
    clone = write_project(tmp_path / "clone", "fedattack")
    (clone / "deep").mkdir()
    with pytest.raises(AppMismatch, match=r"this checkout \(.*clone\) is not the installed"):
        app_root(clone / "deep")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "pyproject.toml").write_bytes(b"\xff[not toml")
    assert app_root(tmp_path / "broken") == PROJECT_ROOT


def test_deploy_local_in_another_checkout_is_refused_in_one_line(tmp_path, monkeypatch):
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({"name": "fed", "scenario": "federated"}))
    monkeypatch.chdir(write_project(tmp_path / "clone", "fedattack"))
    result = CliRunner().invoke(app, ["deploy-local", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "is not the installed fedattack" in result.output
    assert not (tmp_path / "r").exists()


def test_the_deployment_follows_the_rounds_the_serverapp_logs(tmp_path):
    from fedattack.deploy import DeployPaths, LocalDeployment
    from fedattack.io import write_json

    seen = []
    dep = LocalDeployment(DeployPaths(tmp_path), nodes=2,
                          on_round=lambda k, entry: seen.append((k, entry["test_accuracy"])))
    dep.follow_rounds()  # no run.json yet
    write_json(tmp_path / "run.json", {"history": [{"round": 0, "test_accuracy": 0.1},
                                                   {"round": 1, "test_accuracy": 0.2}]})
    dep.follow_rounds()
    write_json(tmp_path / "run.json", {"history": [{"round": 0, "test_accuracy": 0.1},
                                                   {"round": 1, "test_accuracy": 0.2},
                                                   {"round": 2, "test_accuracy": 0.3}]})
    dep.follow_rounds()
    assert seen == [(1, 0.2), (2, 0.3)]
