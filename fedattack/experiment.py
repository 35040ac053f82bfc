"""Setting up an experiment: its dataset, splits, initial model and run directory.

The run directory holds the resolved config, the ground-truth splits, the snapshots and run.json.
Everything here is a pure function of the experiment, so the server, every client and the offline
attack derive the same splits and the same round-0 model on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fedattack.config import ConfigError, Experiment, experiment_yaml, load_experiment
from fedattack.config.data import DatasetSource
from fedattack.data import Dataset, Splits, load_dataset, make_splits
from fedattack.data.files import dataset_digest
from fedattack.data.splits import ensure_same_records, ensure_splits
from fedattack.io import (
    RUN_DIR_MARKER,
    inside,
    remove_file,
    remove_tree,
    write_atomic,
    write_json,
)
from fedattack.models import build_target
from fedattack.privacy import check_private_model

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
SNAPSHOT_DIR = "snapshots"
SPLITS_DIR = "splits"


@lru_cache(maxsize=4)
def cached_dataset(name: str | DatasetSource, root: str | None,
                   num_records: int | None) -> Dataset:
    """Load a dataset once per process: Flower re-creates clients every round, in the same actor.
    A user's dataset (a DatasetSource, which is hashable) is cached by its config too."""
    return load_dataset(name, root=root, num_records=num_records)


def experiment_dataset(exp: Experiment) -> Dataset:
    return cached_dataset(exp.data.dataset, exp.data.root, exp.data.num_records)


def received_experiment(exp_json: str) -> Experiment:
    """The experiment a participant receives from the server (JSON); a config it cannot use
    here (the user's code or files missing on this node) is a one-line ConfigError naming the
    field, which the server reads to fail the run at once (fedattack.usercode)."""
    from pydantic import ValidationError

    from fedattack.config import format_validation_error

    try:
        return Experiment.model_validate_json(exp_json)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "participant", Experiment)) from None


def initial_model(exp: Experiment, dataset: Dataset) -> torch.nn.Module:
    """The untrained target model, a pure function of the experiment's seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed)
        return build_target(exp.model, dataset.input_shape,
                            exp.output_classes(dataset.num_classes))


def experiment_splits(exp: Experiment, dataset: Dataset) -> Splits:
    """The experiment's splits: a pure function of the config and the dataset size (and, for a
    model trained elsewhere, of the indices of its training records, data.members)."""
    members = None
    if exp.data.members is not None and exp.scenario == "federated":
        from fedattack.data.splits import read_partition_members

        members = read_partition_members(exp, len(dataset))
    elif exp.data.members is not None:
        from fedattack.standalone import read_members

        members = read_members(exp, len(dataset))
    return make_splits(len(dataset), exp, dataset.y, members)


def claim_run_dir(exp: Experiment, run_dir: str | Path) -> Path:
    """Create run_dir with the resolved config, or check that it holds this very experiment.

    Refusing a directory of another experiment means a finished run is never overwritten by a
    different config.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = inside(run_dir, CONFIG_FILE)
    if config_path.exists() and holds_no_training(run_dir) and _other_config(config_path, exp):
        remove_tree(run_dir, SPLITS_DIR)  # left by a pre-flight that failed: reclaimed
        remove_file(run_dir, CONFIG_FILE)
    if not config_path.exists():
        write_atomic(config_path, RUN_DIR_MARKER + experiment_yaml(exp))
    elif load_experiment(config_path) != exp:
        raise FileExistsError(
            f"{run_dir} holds a run of a different configuration; choose another --out"
        )
    return run_dir


def holds_no_training(run_dir: Path) -> bool:
    """Whether run_dir holds nothing of a training: no run.json and no snapshot."""
    snapshots = run_dir / SNAPSHOT_DIR
    return not (run_dir / RUN_FILE).exists() and not (
        snapshots.is_dir() and any(snapshots.rglob("*.safetensors")))


def _other_config(path: Path, exp: Experiment) -> bool:
    try:
        return load_experiment(path) != exp
    except ValueError:  # unreadable: nothing of a training depends on it
        return True


def check_against_dataset(exp: Experiment, dataset: Dataset) -> None:
    """What the config alone cannot check: the GAN's classes exist, DP-SGD can train the model,
    the user's model builds and trains on a batch of the dataset, a model trained elsewhere fits
    it and the indices of its training records are records of the dataset."""
    if exp.model.factory is not None:
        check_user_model(exp, dataset)
    if exp.model.weights is not None:
        from fedattack.models.factory import load_weights
        from fedattack.standalone import read_members

        load_weights(initial_model(exp, dataset), exp.model.weights)
        read_members(exp, len(dataset))
    if exp.gan is not None:
        if len(dataset.input_shape) != 3:
            what = ("gan.classifier: eigenfaces reads images" if exp.gan.classifier
                    == "eigenfaces" else "gan: the GAN attack generates images")
            raise ValueError(f"{what}, but {dataset.name}'s records have shape "
                             f"{tuple(dataset.input_shape)}, not (channels, height, width); "
                             "use an image dataset")
        n = dataset.num_classes
        named = {"victim_class": exp.gan.victim_class, "fake_class": exp.gan.fake_class}
        for key, cls in named.items():
            if cls is not None and cls >= n:
                raise ValueError(f"gan.{key} {cls} is not a class of {dataset.name}; "
                                 f"accepted: 0..{n - 1}")
    if exp.privacy is not None and exp.privacy.noise_multiplier is not None:
        check_private_model(initial_model(exp, dataset))


def check_against_splits(exp: Experiment, dataset: Dataset, splits: Splits) -> None:
    """What needs the partitions: a participant other than the GAN's attacker holds records of
    its victim class (otherwise there is no one to attack, and the measures compare the
    generator's samples with nobody's records)."""
    if exp.gan is None:
        return
    from fedattack.data.partition import class_counts

    counts = class_counts(np.asarray(dataset.y), splits.partitions, dataset.num_classes)
    victim = exp.gan.victim_class
    held = {i: c[victim] for i, c in enumerate(counts) if i != exp.gan.attacker}
    if not any(held.values()):
        raise ValueError(f"gan.victim_class: no participant but the attacker (participant "
                         f"{exp.gan.attacker}) holds a record of class {victim} under "
                         f"data.partition {exp.data.partition} (records of class {victim} per "
                         f"participant: {[c[victim] for c in counts]}); choose a class another "
                         "participant holds")


def check_user_model(exp: Experiment, dataset: Dataset) -> None:
    """model.factory: it imports, builds an nn.Module, and runs a forward and a backward pass on
    a batch of the dataset's records; UserCodeError (one line naming the field) otherwise."""
    from fedattack.models.factory import check_on_batch

    model = initial_model(exp, dataset)
    x, y = dataset.batch(np.arange(min(len(dataset), 8)))
    check_on_batch(model.train(), x, y, exp.output_classes(dataset.num_classes))


def ensure_same_dataset(exp: Experiment, dataset: Dataset, run_dir: Path) -> None:
    """A user's dataset (data.dataset a mapping) is the one the run was split from: its digest
    is recorded beside the splits at the start and checked whenever the run is taken up again
    (the built-in datasets' files do not change)."""
    if isinstance(exp.data.dataset, DatasetSource):
        ensure_same_records(dataset_digest(dataset), run_dir)


@dataclass(frozen=True)
class PreparedRun:
    """An experiment with its run directory claimed and its ground-truth splits written: made
    once, by :func:`prepare_run`, and passed down to the training (the stand-alone loop, the
    simulation, the server app it starts in the same process) and to the attack stage."""

    exp: Experiment
    run_dir: Path
    dataset: Dataset
    splits: Splits


def prepare_run(exp: Experiment, run_dir: str | Path,
                dataset: Dataset | None = None) -> PreparedRun:
    """Check the experiment against its dataset, claim the run directory and write the
    ground-truth splits (idempotent: a run taken up again finds them unchanged). `dataset`, when
    given, is the experiment's, already checked (by the runner's pre-flight)."""
    run_dir = Path(run_dir)
    if dataset is None:
        dataset = experiment_dataset(exp)
        check_against_dataset(exp, dataset)
    run_dir = claim_run_dir(exp, run_dir)
    splits = experiment_splits(exp, dataset)
    ensure_splits(splits, run_dir)
    ensure_same_dataset(exp, dataset, run_dir)
    if exp.scenario == "federated":
        write_class_counts(exp, dataset, splits, run_dir)
    return PreparedRun(exp, run_dir, dataset, splits)


CLASS_COUNTS = "class-counts.json"  # in the run directory: what each participant holds


def write_class_counts(exp: Experiment, dataset: Dataset, splits: Splits, run_dir: Path) -> None:
    """Each participant's number of records of each class (json) and their heat map (figure),
    once per run."""
    from fedattack.data.partition import class_counts
    from fedattack.reporting import plot_class_counts

    path = inside(run_dir, CLASS_COUNTS)
    if path.exists():
        return
    counts = class_counts(np.asarray(dataset.y), splits.partitions, dataset.num_classes)
    figure = inside(run_dir, Path("figures") / "class_counts.png")
    figure.parent.mkdir(parents=True, exist_ok=True)
    plot_class_counts(counts, figure, f"{exp.name}: records per class of each participant "
                      f"({exp.data.partition})")
    write_json(path, {"partition": exp.data.partition, "alpha": exp.data.alpha,
                      "sizes": [int(sum(c)) for c in counts], "counts": counts})


def observed_snapshots(exp: Experiment) -> int:
    """T, the number of model snapshots the attacker observes."""
    if exp.scenario == "standalone":
        return 1
    if exp.scenario == "finetune":
        return 2
    snapshots = exp.attack.snapshots if exp.attack else "recorded"
    if snapshots != "recorded":
        return len(snapshots)
    fed = exp.federation
    return sum(fed.records(r) for r in range(1, fed.rounds + 1))
