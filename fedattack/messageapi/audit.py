"""The run directory of an audited Flower app: the experiment that describes it, its ground truth,
its snapshot store and its run.json, in the layout fedattack's own federations write (so that
`fedattack attack RUN_DIR` reads it as it reads theirs).

The experiment (an audit YAML of the user's: scenario federated, the app's model as
``model.factory``, all its records as ``data.dataset``, the attack) is completed here with the
app's own partitions: ``members`` (each partition's training record indices, from the app's own
code, e.g. the function its ``load_data`` uses) is written to ``RUN_DIR/members.npz`` and named
as ``data.members``, so the splits' members are exactly the records each participant trained on
and the non-members are drawn from the records no partition holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedattack.config import ConfigError, Experiment, load_yaml, parse_experiment
from fedattack.data.files import save_npz
from fedattack.data.splits import PARTITION_KEY
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR, initial_model, prepare_run
from fedattack.io import inside, write_json
from fedattack.snapshots import GLOBAL_VIEW, Snapshot, SnapshotStore
from fedattack.training import global_model_entry, resolve_device, weight_names

log = logging.getLogger(__name__)

MEMBERS_FILE = "members.npz"

# The keys of the app's [tool.flwr.app.config] (run_config) that fedattack's wrappers and mods read.
AUDIT_CONFIG = "fedattack-config"  # the audit YAML
AUDIT_RUN_DIR = "fedattack-run-dir"  # where the run directory is written


def audit_paths(run_config) -> tuple[Path, Path]:
    """(audit YAML, run directory) from a Flower run_config; ConfigError naming the missing
    key."""
    missing = [k for k in (AUDIT_CONFIG, AUDIT_RUN_DIR) if k not in run_config]
    if missing:
        raise ConfigError(f"run_config: {', '.join(missing)} missing: name the audit YAML and the "
                          "run directory in [tool.flwr.app.config] (docs/own-flower-app.md)")
    return Path(str(run_config[AUDIT_CONFIG])), Path(str(run_config[AUDIT_RUN_DIR]))


Members = Sequence[Sequence[int]] | Callable[[int, int], Sequence[int]]


def audited_experiment(config: str | Path, run_dir: Path, members: Members) -> Experiment:
    """The audit YAML's experiment with data.members the app's partitions, written to
    run_dir/members.npz (rewritten only if they changed; a changed file is then refused by the
    run directory's config check, as any other changed experiment).

    `members`: each partition's training record indices, or ``(partition, num_partitions) ->
    indices``, called for the YAML's federation.num_participants partitions. Relative folders of
    the YAML's python_path are taken from the YAML's own folder (the ServerApp runs in a folder
    of Flower's, where the working directory means nothing)."""
    config = Path(config)
    data = load_yaml(config)
    if not isinstance(data, dict) or data.get("scenario") != "federated":
        raise ConfigError(f"{config}: an audit of a Flower app is a federated experiment "
                          "(scenario: federated)")
    n = (data.get("federation") or {}).get("num_participants")
    if callable(members):
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"{config}: federation.num_participants: give the number of "
                              "partitions of the app")
        members = [members(p, n) for p in range(n)]
    arrays = {PARTITION_KEY.format(p): np.asarray(m, dtype=np.int64)
              for p, m in enumerate(members)}
    if n is not None and n != len(arrays):
        raise ConfigError(f"{config}: federation.num_participants is {n} but the app gave the "
                          f"records of {len(arrays)} partitions")
    folders = data.get("python_path")
    if isinstance(folders, list):
        data["python_path"] = [str((config.parent / f).resolve()) if isinstance(f, str)
                               and not Path(f).is_absolute() else f for f in folders]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = inside(run_dir, MEMBERS_FILE)
    if not path.exists() or not _same_members(path, arrays):
        save_npz(path, **arrays)
    data.setdefault("data", {})["members"] = str(path.resolve())
    return parse_experiment(data, str(config))


def _same_members(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    try:
        with np.load(path, allow_pickle=False) as held:
            return sorted(held.files) == sorted(arrays) and all(
                np.array_equal(held[k], v) for k, v in arrays.items())
    except (OSError, ValueError):
        return False


class AuditRun:
    """One audited run: its experiment, dataset and splits (prepared in run_dir), its snapshot
    store and run.json.

    run.json is kept as fedattack's own federations keep it: ``history`` (the global model's
    loss and accuracy on the members and on the held-out non-members after each round, round 0
    the initial model), ``rounds`` (accepted partitions and refusals of each), ``refusals``,
    ``status`` (running, finished after the experiment's last round, failed).
    """

    def __init__(self, exp: Experiment, run_dir: str | Path) -> None:
        from fedattack.runner import discard_unfinished, finished_record

        self.exp, self.run_dir = exp, Path(run_dir).resolve()
        if finished_record(self.run_dir) is not None:
            raise FileExistsError(f"{self.run_dir} holds a finished run: attack it (fedattack "
                                  "attack RUN_DIR), or record into another fedattack-run-dir")
        prepared = prepare_run(exp, self.run_dir)
        self.dataset, self.splits = prepared.dataset, prepared.splits
        discard_unfinished(self.run_dir)  # an interrupted run's snapshots: recorded afresh
        self.model = initial_model(exp, self.dataset)
        self.names = weight_names(self.model)
        self.shapes = [tuple(v.shape) for v in self.model.state_dict().values()]
        self.dtypes = [np.dtype(str(v.dtype).removeprefix("torch.")) for v in
                       self.model.state_dict().values()]
        self.partition_sizes = [len(p) for p in self.splits.partitions]
        self.store = SnapshotStore(self.run_dir / SNAPSHOT_DIR)
        self.device = resolve_device(exp.device)
        self.started = time.perf_counter()
        self.record = {"experiment": exp.name, "scenario": exp.scenario, "status": "running",
                       "history": [], "rounds": [], "refusals": [], "recorded_by":
                       "fedattack.messageapi"}

    @classmethod
    def from_files(cls, config: str | Path, run_dir: str | Path, members: Members) -> AuditRun:
        return cls(audited_experiment(config, Path(run_dir), members), run_dir)

    @property
    def rounds(self) -> int:
        return self.exp.federation.rounds

    def records(self, server_round: int) -> bool:
        """Whether this round's observations are recorded (federation.record_rounds)."""
        return server_round == 0 or self.exp.federation.records(server_round)

    def write(self, server_round: int, observations: list[tuple[str, int | None, list]]) -> None:
        """Write (kind, partition, arrays) observations of the round into the aggregator's view,
        skipping those already on disk."""
        done = {(r.kind, r.partition) for r in
                self.store.records(view=GLOBAL_VIEW, round=server_round)}
        batch = [Snapshot(kind, server_round, list(zip(self.names, arrays, strict=True)),
                          partition=partition)
                 for kind, partition, arrays in observations if (kind, partition) not in done]
        if batch:
            self.store.write_many(GLOBAL_VIEW, batch)

    def evaluate(self, server_round: int, arrays: list[np.ndarray]) -> dict:
        """The global model's history entry after `server_round`; run.json rewritten."""
        entry = global_model_entry(self.model, arrays, self.dataset, self.splits, self.device,
                                   server_round, self.started)
        self.record["history"] = [h for h in self.record["history"]
                                  if h["round"] != server_round] + [entry]
        self.record["global_test_accuracy"] = entry["test_accuracy"]
        if server_round >= self.rounds and self.record["status"] == "running":
            self.record["status"] = "finished"
        self.save()
        return entry

    def log_round(self, server_round: int, accepted: list[int], rejected: list[dict],
                  **extra) -> None:
        self.record["rounds"].append({"round": server_round, "accepted": sorted(accepted),
                                      "rejected": rejected, **extra})
        self.record["refusals"].extend({"round": server_round, **r} for r in rejected)

    def fail(self, error: Exception) -> None:
        self.record["status"] = "failed"
        self.record["error"] = str(error)
        self.save()

    def save(self) -> None:
        self.record["wall_time_s"] = round(time.perf_counter() - self.started, 3)
        write_json(self.run_dir / RUN_FILE, self.record)
