"""The aggregator's work in one round, recorded through the Message API against the legacy API.

Same work on both sides: N participants' uploads of the quickstart model (the initial model
plus seeded noise, each partition's size as its example count), checked, written with the
round's global model into a snapshot store, and averaged by FedAvg. Legacy:
``strategies.recording.RecordingStrategy`` around its ``OrderedFedAvg`` (``aggregate_fit`` on
``FitRes``); Message API: ``fedattack.messageapi``'s ``UploadGate(Recorder(FedAvg()))``
(``aggregate_train`` on reply ``Message``s). Timed: the aggregation call alone (building the
replies is the participants' work); the Message recorder's evaluation of the global model for
run.json is left out (the legacy evaluates in its ``evaluate_fn``, outside ``aggregate_fit``).

Printed: the median seconds per round of each over two passes run in the order legacy,
Message, Message, legacy (most of a round is writing the snapshots, whose time drifts with the
disk), and their ratio (the Message API must not be slower on the same work: at most about 1).

    python benchmarks/fl_apis.py [--participants 10] [--rounds 5] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import ndarrays_to_parameters
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity
from tiny import shrink  # benchmarks/tiny.py

from fedattack.config import load_experiment
from fedattack.experiment import experiment_dataset, experiment_splits, initial_model
from fedattack.messageapi import AuditRun, Recorder, UploadGate
from fedattack.messageapi.server import PARTITION_METRIC
from fedattack.snapshots import SnapshotStore
from fedattack.training import get_weights, weight_names
from strategies.recording import RecordingStrategy

REPO = Path(__file__).resolve().parents[1]


def uploads(weights, participants: int, server_round: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(server_round)
    return [[w + rng.normal(0, 1e-3, w.shape).astype(w.dtype) for w in weights]
            for _ in range(participants)]


class Grid:
    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self):
        return self.nodes


def legacy_rounds(exp, run_dir: Path, weights, names, sizes, rounds: int) -> list[float]:
    import sys

    sys.path.insert(0, str(REPO))
    from tests.flower_fakes import client_manager, fit_res

    strategy = RecordingStrategy(
        store=SnapshotStore(run_dir / "snapshots"), record_round=lambda r: True,
        weight_names=names, partition_sizes=sizes, fit_config=lambda r: {},
        initial_parameters=ndarrays_to_parameters(weights), min_fit_clients=len(sizes),
        min_available_clients=len(sizes))
    manager, proxies = client_manager(len(sizes))
    times, current = [], ndarrays_to_parameters(weights)
    for server_round in range(1, rounds + 1):
        strategy.configure_fit(server_round, current, manager)
        results = [(proxy, fit_res(u, sizes[p], p)) for p, (proxy, u) in
                   enumerate(zip(proxies, uploads(weights, len(sizes), server_round),
                                 strict=True))]
        start = time.perf_counter()
        current, _ = strategy.aggregate_fit(server_round, results, [])
        times.append(time.perf_counter() - start)
    return times


def message_rounds(exp, run_dir: Path, weights, names, sizes, rounds: int,
                   members) -> list[float]:
    run_dir.mkdir(parents=True)
    config = run_dir / "audit.yaml"
    spec = exp.model_dump(mode="json")
    spec["federation"]["rounds"] = rounds
    spec["attack"] = None
    config.write_text(yaml.safe_dump(spec))
    run = AuditRun.from_files(config, run_dir / "run", members)
    run.evaluate = lambda server_round, arrays: None  # the legacy's evaluate_fn is not timed
    strategy = UploadGate(Recorder(FedAvg(fraction_evaluate=0.0, min_train_nodes=len(sizes),
                                          min_available_nodes=len(sizes)), run),
                          num_partitions=len(sizes), partition_sizes=sizes, run=run)
    grid = Grid([100 + p for p in range(len(sizes))])
    current = ArrayRecord({n: Array(w) for n, w in zip(names, weights, strict=True)})
    run.record["history"].append({})  # round 0 is recorded by the legacy's configure too
    run.write(0, [("global", None, weights)])
    times = []
    for server_round in range(1, rounds + 1):
        sent = list(strategy.configure_train(server_round, current, ConfigRecord(), grid))
        replies = []
        for msg, upload in zip(sent, uploads(weights, len(sizes), server_round), strict=True):
            p = msg.metadata.dst_node_id - 100
            replies.append(Message(content=RecordDict({
                "arrays": ArrayRecord({n: Array(w) for n, w in zip(names, upload, strict=True)}),
                "metrics": MetricRecord({"num-examples": sizes[p], PARTITION_METRIC: p,
                                         "train_loss": 1.0})}), reply_to=msg))
        start = time.perf_counter()
        current, _ = strategy.aggregate_train(server_round, replies)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="seconds, not minutes")
    args = parser.parse_args()
    exp = load_experiment(REPO / "experiments" / "quickstart.yaml")
    if args.tiny:
        exp = shrink(exp)
        args.rounds = 2
    else:
        d = exp.model_dump()
        d["federation"].update(num_participants=args.participants, rounds=args.rounds,
                               record_rounds="all")
        d["data"].update(train_size=500, nonmember_size=2000)
        d["attack"] = None  # only the training side is measured
        exp = type(exp).model_validate(d)
    torch.set_num_threads(1)
    for key in ("run_id", "node_id", "task_id"):
        setattr(TaskIdentity, key, 1)
    dataset = experiment_dataset(exp)
    splits = experiment_splits(exp, dataset)
    model = initial_model(exp, dataset)
    weights, names = get_weights(model), weight_names(model)
    sizes = [len(p) for p in splits.partitions]
    members = [p.tolist() for p in splits.partitions]
    n = len(sizes)
    print(f"{n} participants, {sum(w.size for w in weights):,} parameters, {args.rounds} rounds "
          f"(upload check, snapshot write, FedAvg; one torch thread)")
    legacy, message = [], []
    for order in ("legacy", "message", "message", "legacy"):  # ABBA: the disk
        with tempfile.TemporaryDirectory() as tmp:  # cache and other load drift, not the API
            if order == "legacy":
                legacy += legacy_rounds(exp, Path(tmp) / "legacy", weights, names, sizes,
                                        args.rounds)
            else:
                message += message_rounds(exp, Path(tmp) / "message", weights, names, sizes,
                                          args.rounds, members)
    a, b = statistics.median(legacy), statistics.median(message)
    print(f"legacy RecordingStrategy s/round (median): {a:.4f}")
    print(f"Message API UploadGate(Recorder(FedAvg)) s/round (median): {b:.4f}")
    print(f"ratio Message API / legacy: {b / a:.2f}")


if __name__ == "__main__":
    main()
