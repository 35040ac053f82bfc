"""Setting up an experiment: its dataset, splits, initial model and run directory.

The run directory holds the resolved config, the ground-truth splits, the snapshots and run.json.
Everything here is a pure function of the experiment, so the server, every client and the offline
attack derive the same splits and the same round-0 model on their own.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from fedattack.config import Experiment, experiment_yaml, load_experiment
from fedattack.data import Dataset, Splits, load_dataset, make_splits
from fedattack.data.splits import ensure_splits
from fedattack.io import inside, write_atomic
from fedattack.models import build_model
from fedattack.privacy import check_private_model

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
SNAPSHOT_DIR = "snapshots"


@lru_cache(maxsize=4)
def cached_dataset(name: str, root: str | None, num_records: int | None) -> Dataset:
    """Load a dataset once per process: Flower re-creates clients every round, in the same actor."""
    return load_dataset(name, root=root, num_records=num_records)


def experiment_dataset(exp: Experiment) -> Dataset:
    return cached_dataset(exp.data.dataset, exp.data.root, exp.data.num_records)


def initial_model(exp: Experiment, dataset: Dataset) -> torch.nn.Module:
    """The untrained target model, a pure function of the experiment's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        return build_model(exp.model.arch, dataset.input_shape,
                           exp.output_classes(dataset.num_classes), exp.model.activation)


def experiment_splits(exp: Experiment, dataset: Dataset) -> Splits:
    """The experiment's splits: a pure function of the config and the dataset size."""
    return make_splits(len(dataset), exp, dataset.y)


def claim_run_dir(exp: Experiment, run_dir: str | Path) -> Path:
    """Create run_dir with the resolved config, or check that it holds this very experiment.

    Refusing a directory of another experiment means a finished run is never overwritten by a
    different config.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = inside(run_dir, CONFIG_FILE)
    if not config_path.exists():
        write_atomic(config_path, experiment_yaml(exp))
    elif load_experiment(config_path) != exp:
        raise FileExistsError(
            f"{run_dir} holds a run of a different configuration; choose another --out"
        )
    return run_dir


def check_against_dataset(exp: Experiment, dataset: Dataset) -> None:
    """What the config alone cannot check: the GAN's classes exist, DP-SGD can train the model."""
    if exp.gan is not None:
        n = dataset.num_classes
        named = {"victim_class": exp.gan.victim_class, "fake_class": exp.gan.fake_class}
        for key, cls in named.items():
            if cls is not None and cls >= n:
                raise ValueError(f"gan.{key} {cls} is not a class of {dataset.name}; "
                                 f"accepted: 0..{n - 1}")
    if exp.privacy is not None and exp.privacy.noise_multiplier is not None:
        check_private_model(initial_model(exp, dataset))


def prepare_run(exp: Experiment, run_dir: str | Path) -> tuple[Dataset, Splits]:
    """Check the experiment against its dataset, claim the run directory and write the
    ground-truth splits; idempotent."""
    dataset = experiment_dataset(exp)
    check_against_dataset(exp, dataset)
    run_dir = claim_run_dir(exp, run_dir)
    splits = experiment_splits(exp, dataset)
    ensure_splits(splits, run_dir)
    return dataset, splits
