"""Stand-alone (centralised) training and fine-tuning: the attacker sees the final model(s).

Fine-tuning follows Section IV-C of Nasr et al.: train on D, then fine-tune on D-delta (by default
60% / 40% of the training set); both models are recorded in the "standalone" view with tags
"before" and "after". A plain stand-alone run records its final model with tag "final".

A model trained elsewhere (``model.weights``, with the indices of its training records in
``data.members``) is not trained: :func:`import_trained` records it as the final model, and the
offline attack audits it like any stand-alone model. The member indices are the ground truth:
they are read only to write the run's splits (membership.npz for the evaluation, and the
attacker's known records drawn from them as in any run).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedattack.config import ConfigError, Experiment
from fedattack.experiment import (
    RUN_FILE,
    SNAPSHOT_DIR,
    PreparedRun,
    initial_model,
    prepare_run,
)
from fedattack.io import write_json
from fedattack.snapshots import SnapshotStore
from fedattack.training import get_weights, resolve_device, train_model, weight_names

VIEW = "standalone"


def record_model(store: SnapshotStore, model, epoch: int, tag: str) -> None:
    tensors = list(zip(weight_names(model), get_weights(model), strict=True))
    store.write(VIEW, "model", epoch, tensors, tag=tag)


def read_members(exp: Experiment, num_records: int) -> np.ndarray:
    """The sorted indices of data.members (.npy, or text: integers separated by commas or white
    space); ConfigError naming the field unless they are distinct records of the dataset, as
    many as data.train_size (which the reference models train on)."""
    path = Path(exp.data.members)
    field = "data.members"
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            tokens = [t for t in re.split(r"[\s,]+", path.read_text()) if t]
            values = np.array([int(t) for t in tokens])
    except FileNotFoundError:
        raise ConfigError(f"{field}: {path} not found") from None
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{field}: {path} is not a list of record indices (.npy, or integers "
                          f"in a .txt/.csv): {' '.join(str(err).split())[:120]}") from None
    if values.ndim != 1 or values.dtype.kind not in "iu" or len(values) == 0:
        raise ConfigError(f"{field}: {path} must hold a non-empty 1-D array of integer indices")
    members = np.unique(values).astype(np.int64)
    if len(members) != len(values):
        raise ConfigError(f"{field}: {path} lists {len(values) - len(members)} indices twice")
    if members[0] < 0 or members[-1] >= num_records:
        bad = members[0] if members[0] < 0 else members[-1]
        raise ConfigError(f"{field}: index {bad} is not a record of the dataset (0.."
                          f"{num_records - 1})")
    if len(members) != exp.data.train_size:
        raise ConfigError(f"{field}: {path} lists {len(members)} training records but "
                          f"data.train_size is {exp.data.train_size}; set data.train_size: "
                          f"{len(members)} (the reference models train on as many)")
    return members


def import_trained(exp: Experiment, run_dir: str | Path,
                   prepared: PreparedRun | None = None) -> dict:
    """Record the model trained elsewhere (model.weights) as the run's final model, with its
    accuracy on its members and on the held-out non-members; no training."""
    from fedattack.models.factory import load_weights
    from fedattack.training import evaluate

    prepared = prepared or prepare_run(exp, run_dir)
    run_dir, dataset, splits = prepared.run_dir, prepared.dataset, prepared.splits
    device = resolve_device(exp.device)
    model = load_weights(initial_model(exp, dataset), exp.model.weights).to(device)
    record_model(SnapshotStore(run_dir / SNAPSHOT_DIR), model, 0, "final")
    train = evaluate(model, dataset, splits.partitions[0], device)
    test = evaluate(model, dataset, splits.nonmembers, device)
    record = {"experiment": exp.name, "scenario": exp.scenario, "status": "finished",
              "trained": "elsewhere", "weights": exp.model.weights,
              "history": [{"phase": "imported", "epoch": 0, "train_loss": train["loss"],
                           "train_accuracy": train["accuracy"], "test_loss": test["loss"],
                           "test_accuracy": test["accuracy"]}]}
    write_json(run_dir / RUN_FILE, record)
    return record


def run_standalone(
    exp: Experiment, run_dir: str | Path, on_epoch: Callable[[dict], None] | None = None,
    prepared: PreparedRun | None = None,
) -> dict:
    """Train the target model centrally (and fine-tune it, for scenario "finetune"); a model
    trained elsewhere (model.weights) is recorded as it is."""
    if exp.model.weights is not None:
        return import_trained(exp, run_dir, prepared)
    prepared = prepared or prepare_run(exp, run_dir)
    run_dir, dataset, splits = prepared.run_dir, prepared.dataset, prepared.splits
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    device = resolve_device(exp.device)
    model = initial_model(exp, dataset).to(device)
    started = time.perf_counter()
    record = {"experiment": exp.name, "scenario": exp.scenario, "status": "running",
              "history": []}

    def phase(name: str, train_idx, epochs: int, start_epoch: int, seed: int) -> None:
        def log_epoch(entry: dict) -> None:
            entry = {"phase": name, **entry}
            record["history"].append(entry)
            write_json(run_dir / RUN_FILE, record)
            if on_epoch:
                on_epoch(entry)

        train_model(model, dataset, train_idx, splits.nonmembers, exp.training, epochs, device,
                    seed, on_epoch=log_epoch, start_epoch=start_epoch)

    epochs = exp.training.epochs
    phase("train", splits.partitions[0], epochs, 0, exp.seed)
    if exp.scenario == "finetune":
        record_model(store, model, epochs, "before")
        phase("finetune", splits.partitions[1], exp.training.finetune_epochs, epochs, exp.seed + 1)
        record_model(store, model, epochs + exp.training.finetune_epochs, "after")
    else:
        record_model(store, model, epochs, "final")
    record["status"] = "finished"
    record["wall_time_s"] = round(time.perf_counter() - started, 3)
    write_json(run_dir / RUN_FILE, record)
    return record
