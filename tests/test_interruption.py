"""Ctrl-C and SIGTERM stop a run at once and leave no process (issue 25, items 6 and 7).

Real processes and real signals, no Ray: a command that has started what a simulation or a
deployment starts (a child in a session of its own, a grandchild that ignores SIGTERM, a
thread that waits for ever) is interrupted; it must exit 130 within seconds with one line,
leave none of those processes, and run.json must say `interrupted`. The same through a real
Flower simulation and a real deployment is in tests/test_signals.py and
tests/test_deploy_local.py (slow).
"""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fedattack.interruption import descendants, mark_interrupted, still_alive
from fedattack.io import read_json, write_json

REPO = Path(__file__).resolve().parents[1]

COMMAND = textwrap.dedent("""
    import subprocess, sys, threading, time
    from fedattack.cli import exit_interrupted
    from fedattack.interruption import interrupting_signals, marks_interrupted
    from fedattack.io import write_json

    with interrupting_signals() as interruption:
        try:
            with marks_interrupted(sys.argv[1], "x"):
                write_json(sys.argv[1] + "/run.json", {"experiment": "x", "status": "running"})
                # as deploy-local's processes: a session of its own, and a child of its own
                subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)
                # as Ray's processes, which block SIGINT: a child whose child (as the raylet's
                # agents) outlives it, and ignores SIGTERM too
                subprocess.Popen(["sh", "-c", "trap '' INT TERM; sleep 600 & wait"])
                # as Flower's server threads once Ray is gone: a thread that never ends
                threading.Thread(target=threading.Event().wait).start()
                time.sleep(0.5)
                print("ready", flush=True)
                time.sleep(600)
        except KeyboardInterrupt:
            exit_interrupted(interruption)
""")


def start_command(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", COMMAND, str(run_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


@pytest.mark.parametrize("how", ["SIGTERM to the command", "SIGINT to its group (Ctrl-C)",
                                 "SIGTERM twice"])
def test_a_signal_stops_every_process_and_marks_the_run_interrupted(tmp_path, how):
    proc = start_command(tmp_path)
    started = descendants(proc.pid)
    assert len(started) >= 4  # two shells and two sleeps
    began = time.monotonic()
    if how.startswith("SIGINT"):
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
        if how.endswith("twice"):
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)  # ignored: the first one's stopping goes on
    try:
        code = proc.wait(timeout=30)
    finally:
        for pid, _ in started:  # whatever the outcome, leave nothing running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    took = time.monotonic() - began
    assert code == 130, proc.stderr.read()
    assert took < 15, took  # the grandchild that ignores SIGTERM is killed after 5 s
    assert still_alive(started) == []
    assert proc.stderr.read().strip() == "interrupted: run the same command again to resume"
    assert read_json(tmp_path / "run.json")["status"] == "interrupted"


def test_mark_interrupted_keeps_a_finished_or_failed_record(tmp_path):
    for status in ("finished", "failed"):
        write_json(tmp_path / "run.json", {"status": status, "history": [1]})
        mark_interrupted(tmp_path, "x")
        assert read_json(tmp_path / "run.json") == {"status": status, "history": [1]}
    write_json(tmp_path / "run.json", {"status": "running", "history": [1]})
    mark_interrupted(tmp_path, "x")
    assert read_json(tmp_path / "run.json") == {"status": "interrupted", "history": [1]}
    (tmp_path / "run.json").write_text('{"status": "runn')  # torn by a kill -9 long ago
    mark_interrupted(tmp_path, "x")
    assert read_json(tmp_path / "run.json") == {"experiment": "x", "status": "interrupted"}
