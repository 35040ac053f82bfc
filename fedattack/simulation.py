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
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedattack import protocol
from fedattack.config import Experiment
from fedattack.experiment import CONFIG_FILE, RUN_FILE, prepare_run
from fedattack.io import read_json

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


def flower_environment(run_dir: Path) -> None:
    """Keep Flower's state inside the run and stop it from phoning home or installing deps."""
    os.environ.setdefault("FLWR_HOME", str(run_dir.resolve() / ".flwr"))
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


class _DropDeprecations(logging.Filter):
    """Flower's notice that ``run_simulation`` is deprecated: this library calls it on purpose
    (it is the in-process API that lets a campaign drive many runs), so users need not see it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "DEPRECATED FEATURE" not in str(record.msg)


@contextmanager
def quiet_libraries(verbose: bool):
    """Without ``--verbose``: Flower at WARNING without its deprecation notice, and none of Ray's
    FutureWarnings (tips about future defaults). With it, everything as the libraries print it."""
    if verbose:
        yield
        return
    flwr_logger = logging.getLogger("flwr")
    level, dropper = flwr_logger.level, _DropDeprecations()
    flwr_logger.setLevel(logging.WARNING)
    flwr_logger.addFilter(dropper)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray(\.|$)")
            yield
    finally:
        flwr_logger.removeFilter(dropper)
        flwr_logger.setLevel(level)


def run_federated(
    exp: Experiment,
    run_dir: str | Path,
    on_round: Callable[[int, dict], None] | None = None,
    verbose: bool = False,
) -> dict:
    """Run one federated experiment in a Flower simulation; return run.json's content."""
    from flwr.simulation import run_simulation

    run_dir = Path(run_dir).resolve()
    prepare_run(exp, run_dir)
    flower_environment(run_dir)
    res = Resources.for_experiment(exp)
    overrides = {
        protocol.CONFIG_PATH: str(run_dir / CONFIG_FILE),
        protocol.RUN_DIR: str(run_dir),
        protocol.CLIENT_THREADS: res.client_cpus,
    }
    server_app = load_object(SERVER_APP_FACTORY)(overrides, on_round)
    client_app = load_object(CLIENT_APP_FACTORY)(overrides)
    backend_config = {
        "client_resources": {"num_cpus": res.client_cpus, "num_gpus": res.client_gpus},
        "init_args": {"num_cpus": res.total_cpus, "include_dashboard": False,
                      "logging_level": logging.WARNING, "log_to_driver": verbose},
    }
    with quiet_libraries(verbose):
        run_simulation(server_app=server_app, client_app=client_app,
                       num_supernodes=exp.federation.num_participants,
                       backend_config=backend_config, verbose_logging=verbose)
    record = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).exists() else {}
    if record.get("status") != "finished":
        raise RuntimeError(f"federated run {exp.name} did not finish; see {run_dir / RUN_FILE}")
    return record
