"""One Ctrl-C or SIGTERM during a real Flower simulation (issue 25, item 7): the command exits
within seconds with one line, leaves no process of its session (no raylet, no
ray::DashboardAgent, no ray::RuntimeEnvAgent, no actor), prints no Ray crash dump, run.json says
`interrupted`, and the same command then runs the experiment to its end.

Slow (Ray starts three times): CI runs it on its own (.ci/run). tests/test_interruption.py
checks the same handling without Ray in `make test`.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fakes import tiny_data, tiny_experiment

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = tiny_experiment("signals", data=tiny_data(100, 50, num_records=1000), device="cpu",
                             federation={"num_participants": 2, "rounds": 8})
STOP_BOUND_S = 30  # from the signal to the exit; Ray's own shutdown takes a few seconds


def session_processes(sid: int) -> list[str]:
    """The command lines of live processes of session `sid`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(cmdline or stat[stat.index("(") + 1:stat.rindex(")")])
    return found


def fedattack_run(tmp_path: Path) -> subprocess.Popen:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "fedattack.cli", "run", "exp.yaml", "--out",
                             "run", "--quiet"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_for_round(run_json: Path, proc: subprocess.Popen, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if any(e["round"] >= 1 for e in json.loads(run_json.read_text())["history"]):
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise AssertionError("no round finished")


def kill_session(sid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_one_signal_in_training_stops_everything_and_the_rerun_finishes(tmp_path, how):
    proc = fedattack_run(tmp_path)
    try:
        wait_for_round(tmp_path / "run" / "run.json", proc)
        began = time.monotonic()
        if how == "Ctrl-C":  # a terminal sends SIGINT to the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_BOUND_S)
        took = time.monotonic() - began
        time.sleep(1)
        left = session_processes(proc.pid)
    finally:
        kill_session(proc.pid)
    stderr = proc.stderr.read()
    assert code == 130, stderr
    assert took < STOP_BOUND_S
    assert left == [], left
    assert stderr.strip() == "interrupted: run the same command again to resume", stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "interrupted"
    if how == "SIGTERM":  # once is enough: Ray starts again, and the run goes to its end
        again = fedattack_run(tmp_path)
        try:
            assert again.wait(timeout=600) == 0, again.stderr.read()
        finally:
            kill_session(again.pid)
        record = json.loads((tmp_path / "run" / "run.json").read_text())
        assert record["status"] == "finished"
        assert [e["round"] for e in record["history"]] == list(range(9))
