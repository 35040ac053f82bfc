"""Stopping a run on Ctrl-C or SIGTERM: promptly, with no process left, and run.json saying so.

The command line turns SIGINT and SIGTERM into one KeyboardInterrupt in its main thread
(:func:`interrupting_signals`), so that a `kill PID` unwinds the run as Ctrl-C does (the local
deployment stops its processes on the way out). The handler also notes, at the moment of the
signal, every process this one has started (Ray's raylet, its agents and actors, the
deployment's SuperLink and SuperNodes), and from then on the process adopts its orphaned
descendants: some outlive the process that started them (Ray's DashboardAgent and
RuntimeEnvAgent when the raylet goes), so :func:`stop_processes` stops those still alive once
the run has unwound. A Flower simulation on Ray is not unwound but ended from the handler
(:func:`ends_at_once`). :func:`mark_interrupted` records the interruption in run.json; a rerun
of the same command starts the training again, as after any run that did not finish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fedattack.io import freeze_writes, read_json, write_json

INTERRUPTING = (signal.SIGINT, signal.SIGTERM)
INTERRUPTED = 130  # the exit code, the shell's for Ctrl-C
RESUME_LINE = "interrupted: run the same command again to resume"
STOP_GRACE_S = 5.0  # how long a noted process has to exit on SIGTERM before SIGKILL
RUN_FILE = "run.json"  # as fedattack.experiment.RUN_FILE, without importing torch here


@dataclass
class Interruption:
    """The signal that interrupted the run (None until one comes) and the processes this one
    had started at that moment, as (pid, start time) so a reused pid is never signalled."""

    signal: signal.Signals | None = None
    processes: list[tuple[int, int]] = field(default_factory=list)


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, parent pid, ...: field 3 of
    proc(5) onwards), None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()  # the name in parentheses may hold spaces


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, None if it is gone."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])  # field 22 of proc(5)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process /proc shows (empty where there is no /proc)."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(entry.name)
        if fields is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int | None = None) -> list[tuple[int, int]]:
    """Every process below `pid` (default: this one), as (pid, start time)."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(root, []))
    while todo:
        child = todo.pop()
        started = _start_time(child)
        if started is not None:
            found.append((child, started))
        todo.extend(children.get(child, []))
    return found


def still_alive(processes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Those of `processes` (pid, start time) that still run (a zombie does not)."""
    alive = []
    for pid, started in processes:
        fields = _stat(pid)
        if fields is not None and int(fields[19]) == started and fields[0] != "Z":
            alive.append((pid, started))
    return alive


def _signal_all(processes: list[tuple[int, int]], sig: signal.Signals) -> None:
    for pid, _ in still_alive(processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop_processes(processes: list[tuple[int, int]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM those of `processes` still alive, SIGKILL any left after `grace_s` seconds, and
    wait a moment for them to go."""
    _signal_all(processes, signal.SIGTERM)
    _wait_gone(processes, grace_s)
    _signal_all(processes, signal.SIGKILL)
    _wait_gone(processes, 2.0)


def _wait_gone(processes: list[tuple[int, int]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while still_alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)


PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37  # prctl(2), Linux >= 3.4


def _subreaper(on: bool | None = None) -> bool:
    """Whether this process adopts its orphaned descendants (Linux; False elsewhere); with `on`,
    make it so first. A process whose parent exits is re-parented to its nearest subreaper
    ancestor instead of init, so that it stays among :func:`descendants` and can be stopped."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if on is not None:
            libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
        state = ctypes.c_int(0)
        libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(state), 0, 0, 0)
        return bool(state.value)
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def interrupting_signals() -> Iterator[Interruption]:
    """For the block, the first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread
    (noting the processes started so far, and silencing the libraries' logging, whose errors
    from then on are about the processes being stopped); later signals are ignored, so that
    stopping what the run started, which takes seconds, is not cut short and leaves nothing
    behind. From the signal on, this process also adopts the orphans among its descendants
    (a raylet's agents once the raylet has gone), so that none escapes the stopping; not before,
    where it would collect the zombies of the actors every Ray shutdown leaves. The previous
    handlers, logging and adoption come back after the block. Outside the main thread, nothing
    changes."""
    interruption = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield interruption
        return

    def interrupt(signum: int, _frame) -> None:
        if interruption.signal is not None:
            return
        interruption.signal = signal.Signals(signum)
        _subreaper(True)
        interruption.processes = descendants()
        logging.disable(logging.CRITICAL)
        if _AT_ONCE:
            exit_at_once(interruption, *_AT_ONCE[-1])
        raise KeyboardInterrupt(interruption.signal.name)

    saved = {sig: signal.signal(sig, interrupt) for sig in INTERRUPTING}
    logging_disabled = logging.root.manager.disable
    adopting = _subreaper()
    try:
        yield interruption
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        logging.disable(logging_disabled)
        _subreaper(adopting)


_AT_ONCE: list[tuple[Path, str]] = []  # the run (directory, experiment) ended at once, if any


@contextlib.contextmanager
def ends_at_once(run_dir: str | Path, experiment: str) -> Iterator[None]:
    """Within the block, the signal :func:`interrupting_signals` handles ends the process from
    its handler (:func:`exit_at_once`) instead of unwinding the stack. For a Flower simulation on
    Ray: unwinding runs Flower's clean-up, which shuts Ray down while Flower's worker threads
    still call into it, and Ray's core then ends the process itself, exit code 1 (or, on Ctrl-C,
    the server's threads wait for replies that never come, for ever)."""
    _AT_ONCE.append((Path(run_dir), experiment))
    try:
        yield
    finally:
        _AT_ONCE.pop()


def exit_at_once(interruption: Interruption, run_dir: Path, experiment: str) -> None:
    """End an interrupted run now: let no other thread write again, mark run.json interrupted,
    say how to resume, SIGKILL every process the run started (Ray's state is not kept: the
    rerun starts the training again) and exit 130 at once. Nothing is waited for after the
    kill: Ray's core, in this process, ends it with exit code 1 when it sees its raylet gone."""
    freeze_writes()
    mark_interrupted(run_dir, experiment)
    announce_interrupted()
    _signal_all(interruption.processes + descendants(), signal.SIGKILL)
    os._exit(INTERRUPTED)


def announce_interrupted() -> None:
    """The one line an interrupted command ends with, on a line of its own, with the terminal's
    cursor shown again (a progress display hides it)."""
    if sys.stderr.isatty():
        sys.stderr.write("\x1b[?25h\n")
    print(RESUME_LINE, file=sys.stderr, flush=True)
    sys.stdout.flush()


def reinstall_handlers() -> None:
    """Put Python's handlers of SIGINT and SIGTERM back in force (main thread only). Ray's core,
    started in this process, installs a C handler of its own for SIGTERM over Python's, which
    prints a stack dump and ends the process: called once Ray has started, this makes SIGTERM
    interrupt the run as :func:`interrupting_signals` says."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in INTERRUPTING:
        handler = signal.getsignal(sig)
        if handler is not None:  # None: installed from outside Python, nothing to restore
            signal.signal(sig, handler)


def mark_interrupted(run_dir: str | Path, experiment: str) -> None:
    """Record in run.json that the training was interrupted (unless it had finished or failed
    first); a run.json that cannot be read is replaced, one that cannot be written is left."""
    path = Path(run_dir) / RUN_FILE
    try:
        record = read_json(path)
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict):
        record = {"experiment": experiment}
    if record.get("status") in ("finished", "failed"):
        return
    record["status"] = "interrupted"
    with contextlib.suppress(OSError):
        write_json(path, record)


@contextlib.contextmanager
def marks_interrupted(run_dir: str | Path, experiment: str) -> Iterator[None]:
    """:func:`mark_interrupted` if the block is interrupted (KeyboardInterrupt goes on)."""
    try:
        yield
    except KeyboardInterrupt:
        mark_interrupted(run_dir, experiment)
        raise
