"""Stand-alone (centralised) training and fine-tuning: the attacker sees the final model(s).

Fine-tuning follows Section IV-C of Nasr et al.: train on D, then fine-tune on D-delta (by default
60% / 40% of the training set); both models are recorded in the "standalone" view with tags
"before" and "after". A plain stand-alone run records its final model with tag "final".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fedattack.config import Experiment
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR, initial_model, prepare_run
from fedattack.io import write_json
from fedattack.snapshots import SnapshotStore
from fedattack.training import get_weights, resolve_device, train_model, weight_names

VIEW = "standalone"


def record_model(store: SnapshotStore, model, epoch: int, tag: str) -> None:
    tensors = list(zip(weight_names(model), get_weights(model), strict=True))
    store.write(VIEW, "model", epoch, tensors, tag=tag)


def run_standalone(
    exp: Experiment, run_dir: str | Path, on_epoch: Callable[[dict], None] | None = None
) -> dict:
    """Train the target model centrally (and fine-tune it, for scenario "finetune")."""
    run_dir = Path(run_dir)
    dataset, splits = prepare_run(exp, run_dir)
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
