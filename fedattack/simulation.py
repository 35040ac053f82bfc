"""Launching a federated experiment as a Flower simulation on Ray, from Python.

The ServerApp and ClientApp are loaded by name (as `flwr run` loads the components named in
pyproject.toml), so this library never imports the Flower roles statically: the arrows of the
design point from strategies/ and clients/ into fedattack/, never back.

Ray is started by Flower's simulation runtime for each experiment: in Flower 1.42
``run_simulation`` always shuts Ray down when it ends (``RayBackend.terminate``), and the backend
is not pluggable, so one Ray start per campaign is not possible without patching Flower.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedattack import protocol
from fedattack.config import ConfigError, Experiment
from fedattack.experiment import CONFIG_FILE, RUN_FILE, PreparedRun, prepare_run
from fedattack.interruption import ends_at_once, reinstall_handlers
from fedattack.io import read_json

RAY_START_TIMEOUT_ENV = "FEDATTACK_RAY_START_TIMEOUT_S"
RAY_START_TIMEOUT_S = 120.0  # default: a Ray that has not started by then will not start

SERVER_APP_FACTORY = "strategies.server_app:make_server_app"
CLIENT_APP_FACTORY = "clients.client_app:make_client_app"


def load_object(ref: str):
    """Import `module:attribute`, like Flower's component loader."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Resources:
    """How the machine is shared between simulated participants."""

    total_cpus: int
    client_cpus: int
    client_gpus: float

    @classmethod
    def for_experiment(cls, exp: Experiment) -> Resources:
        """Spread the cores over the participants that can run at once; never ask for more
        CPUs per client than the machine has (Ray would then schedule no actor at all)."""
        total = available_cpus()
        wanted = exp.federation.client_cpus or max(1, total // exp.federation.num_participants)
        return cls(total, min(wanted, total), exp.federation.client_gpus)


def flower_settings(flwr_home: Path) -> dict[str, str]:
    """The environment every Flower process of one experiment gets, in simulation and in the
    deployment alike: its state in the run's own FLWR_HOME, no update check, no runtime
    dependency installation, Ray's log lines not deduplicated."""
    return {
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_DEDUP_LOGS": os.environ.get("RAY_DEDUP_LOGS", "0"),
    }


@contextmanager
def flower_environment(run_dir: Path):
    """The experiment's Flower environment (``flower_settings``, FLWR_HOME inside ``run_dir``) in
    this process for the length of the block, then the caller's environment back: in a campaign
    each experiment keeps Flower's state in its own run directory. PYTHONPATH comes back too:
    starting Ray puts this process's sys.path into it (`start_ray`, as Flower's Ray backend
    does), and a program run after the block (Debian's docker-compose, on the system Python)
    would otherwise import the venv's packages."""
    settings = flower_settings(run_dir.resolve() / ".flwr")
    saved = {key: os.environ.get(key) for key in (*settings, "PYTHONPATH")}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _DropMessages(logging.Filter):
    """Drops the records whose message contains ``phrase``."""

    def __init__(self, phrase: str) -> None:
        super().__init__()
        self.phrase = phrase

    def filter(self, record: logging.LogRecord) -> bool:
        return self.phrase not in str(record.msg)


# Flower's notice that run_simulation is deprecated: this library calls it on purpose (the
# in-process API that lets a campaign drive many runs). Ray's notice that it set no SIGTERM handler:
# it starts in a thread of its own here (see start_ray), on purpose.
QUIET_NOTICES = (("flwr", "DEPRECATED FEATURE"),
                 ("ray._private.worker", "SIGTERM handler is not set"))


@contextmanager
def quiet_libraries(verbose: bool):
    """Without ``--verbose``: Flower at WARNING without its deprecation notice, and none of Ray's
    FutureWarnings (tips about future defaults). With it, everything as the libraries print it."""
    if verbose:
        yield
        return
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    filters = [(logging.getLogger(name), _DropMessages(phrase)) for name, phrase in QUIET_NOTICES]
    flwr_logger.setLevel(logging.WARNING)
    for logger, dropper in filters:
        logger.addFilter(dropper)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
            yield
    finally:
        for logger, dropper in filters:
            logger.removeFilter(dropper)
        flwr_logger.setLevel(level)


class RayStartFailed(RuntimeError):
    """Ray could not be started (e.g. an address-space limit, ``ulimit -v``, too low for it)."""


def ray_start_timeout() -> float:
    raw = os.environ.get(RAY_START_TIMEOUT_ENV, str(RAY_START_TIMEOUT_S))
    try:
        timeout = float(raw)
    except ValueError:
        timeout = float("nan")
    if not timeout > 0 or timeout == float("inf"):
        raise ConfigError(f"{RAY_START_TIMEOUT_ENV}={raw!r}: expected a positive number of "
                          "seconds")
    return timeout


def start_ray(init_args: dict, timeout_s: float) -> threading.Event:
    """Start Ray as Flower's Ray backend would, but give up after `timeout_s` seconds.

    Flower starts Ray only if it is not running yet (``RayBackend.init_ray``), so starting it
    here first changes nothing else. ray.init runs in a daemon thread so that a start that hangs
    (it does under a low ``ulimit -v``) cannot hang the run; that thread must live until Ray is
    shut down, since Ray's own processes die with the thread that started them (they are started
    with PR_SET_PDEATHSIG): set the returned event once the simulation is over.
    """
    import ray

    done = threading.Event()
    if ray.is_initialized():
        done.set()
        return done
    # What RayBackend.init_ray does: the workers import what this process can import.
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    outcome: list[BaseException | None] = []
    started = threading.Event()

    def init() -> None:
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init_args)
            outcome.append(None)
        except BaseException as err:  # reported by the caller's thread
            outcome.append(err)
        started.set()
        done.wait()

    threading.Thread(target=init, name="ray-start", daemon=True).start()
    started.wait(timeout_s)
    hint = ("is the address-space limit (ulimit -v) or the memory too low? "
            f"{RAY_START_TIMEOUT_ENV} sets how long to wait")
    if not outcome:
        done.set()
        raise RayStartFailed(f"Ray did not start within {timeout_s:g} s: {hint}")
    if outcome[0] is not None:
        done.set()
        message = " ".join(str(outcome[0]).split())[:300]
        raise RayStartFailed(f"Ray did not start ({type(outcome[0]).__name__}: {message}): "
                             f"{hint}")
    return done


def run_federated(
    exp: Experiment,
    run_dir: str | Path,
    on_round: Callable[[int, dict], None] | None = None,
    verbose: bool = False,
    prepared: PreparedRun | None = None,
) -> dict:
    """Run one federated experiment in a Flower simulation; return run.json's content. The
    prepared run (made here if not given) is handed to the server app, which runs in this
    process."""
    from flwr.simulation import run_simulation

    run_dir = Path(run_dir).resolve()
    if prepared is None or prepared.run_dir.resolve() != run_dir:
        prepared = prepare_run(exp, run_dir, prepared.dataset if prepared else None)
    res = Resources.for_experiment(exp)
    overrides = {
        protocol.CONFIG_PATH: str(run_dir / CONFIG_FILE),
        protocol.RUN_DIR: str(run_dir),
        protocol.CLIENT_THREADS: res.client_cpus,
    }
    failures: list[Exception] = []
    server_app = load_object(SERVER_APP_FACTORY)(overrides, on_round, failures.append, prepared)
    client_app = load_object(CLIENT_APP_FACTORY)(overrides)
    init_args = {"num_cpus": res.total_cpus, "include_dashboard": False,
                 "logging_level": logging.WARNING, "log_to_driver": verbose}
    backend_config = {
        "client_resources": {"num_cpus": res.client_cpus, "num_gpus": res.client_gpus},
        "init_args": init_args,
    }
    with flower_environment(run_dir), quiet_libraries(verbose), ends_at_once(run_dir, exp.name):
        ray_started = start_ray(init_args, ray_start_timeout())
        reinstall_handlers()  # Ray's core took SIGTERM over
        try:
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=exp.federation.num_participants,
                           backend_config=backend_config, verbose_logging=verbose)
        finally:
            ray_started.set()  # Flower has shut Ray down: its starting thread may end
    if failures:  # a round with no acceptable upload (FederationFailed), a full disk (OSError)
        raise failures[0]
    record = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).exists() else {}
    if record.get("status") != "finished":
        raise RuntimeError(f"federated run {exp.name} did not finish; see {run_dir / RUN_FILE}")
    return record
