"""`flwr run .` as docs/explanation/design.md says (issue 11): Flower's own local SuperLink
runs the ServerApp and ClientApp of pyproject.toml in a simulation; the run ends
``finished:completed`` (`flwr ls`) and its run directory holds run.json (finished) and the
snapshots.

Slow (a SuperLink, a SuperExec and a Ray simulation); .ci/run runs it explicitly.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.snapshots import SnapshotStore
from tests.fakes import tiny_data, tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
FLWR = Path(sys.executable).parent / "flwr"
TIMEOUT_S = 900

TINY = yaml.safe_dump(tiny_experiment(
    "flwr-run", data=tiny_data(100, 50, num_records=3000, nonmember=600),
    federation={"num_participants": 4, "rounds": 2, "record_rounds": "all"}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    """Pids of the processes whose command line contains `text` (here: this test's FLWR_HOME,
    which only the SuperLink it started names)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def children_of(pid: int) -> list[int]:
    kids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(proc.name))
    return kids


def wait_for_run(flwr: Path, run_id: str, cwd: Path, env: dict, home: Path) -> None:
    """Poll `flwr ls` until the run finishes (at most TIMEOUT_S); it must finish completed (the
    SuperLink's log tail is shown otherwise)."""
    deadline, status = time.monotonic() + TIMEOUT_S, ""
    while time.monotonic() < deadline:
        listed = subprocess.run([str(flwr), "ls", "--run-id", run_id, "--format", "json"],
                                cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stdout + listed.stderr
        status = json.loads(listed.stdout)["runs"][0]["status"]
        if status.startswith("finished"):
            break
        time.sleep(5)
    log = home / "local-superlink" / "superlink.log"
    assert status == "finished:completed", (status, log.read_text()[-3000:])


def stop(pids: list[int]) -> None:
    """SIGTERM each pid (and what it spawned), SIGKILL what is left after 10 s."""
    everyone = list(pids)
    for pid in pids:
        everyone += children_of(pid)
    for pid in everyone:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in everyone):
        time.sleep(0.2)
    for pid in everyone:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def users_project(tmp_path: Path) -> str:
    """Issue 26: the experiment of a project the test writes (model class, CSV, attack plug-in),
    named with absolute paths, as `flwr run` needs (its ServerApp runs in a folder of Flower's)."""
    from tests.test_user_federation import federation
    from tests.user_project import write_project

    spec = federation(write_project(tmp_path / "project"))
    spec["federation"]["num_participants"] = 4
    spec["data"]["nonmember_size"] = 40  # 4 x 20 + 40 = the CSV's 120 records
    return yaml.safe_dump(spec)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["built-in", "users-project"])
def test_flwr_run_as_the_readme_says_completes_and_writes_the_run_directory(tmp_path,
                                                                            experiment):
    if sys.platform != "linux":
        pytest.fail("this test finds the SuperLink it started through /proc (Linux)")
    home = tmp_path / "flwr-home"
    (tmp_path / "tiny.yaml").write_text(TINY if experiment == "built-in" else
                                        users_project(tmp_path))
    run_dir = tmp_path / "run"
    env = {**os.environ, "FLWR_HOME": str(home),
           # the venv activated, as docs/explanation/design.md says: flwr starts
           # flower-superlink from the PATH
           "PATH": os.pathsep.join([str(FLWR.parent), os.environ.get("PATH", "")]),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # as the docs say
           "FLWR_DISABLE_UPDATE_CHECK": "1",
           # ports of its own, so that no other local SuperLink is reused or disturbed
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()),
           "FLWR_LOCAL_CONTROL_API_PORT": str(free_port())}
    run_config = f'config-path="{tmp_path / "tiny.yaml"}" run-dir="{run_dir}"'
    try:
        started = subprocess.run(
            [str(FLWR), "run", ".", "--federation-config", "num-supernodes=4",
             "--run-config", run_config],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        found = re.search(r"Successfully started run (\d+)", started.stdout)
        assert found, started.stdout + started.stderr
        run_id = found.group(1)
        wait_for_run(FLWR, run_id, ROOT, env, home)
    finally:
        stop(processes_mentioning(str(home)))
    assert not processes_mentioning(str(home))
    record = read_json(run_dir / RUN_FILE)
    assert record["status"] == "finished" and [h["round"] for h in record["history"]] == [0, 1, 2]
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1, 2, 3]] * 2
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    assert {r.round for r in store.records(view="global", kind="upload")} == {1, 2}
    for rec in store.records():
        store.read_arrays(rec)  # each file is there and matches its checksum
