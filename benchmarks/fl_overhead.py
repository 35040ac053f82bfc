"""Cost of running FedAvg through Flower's simulation instead of a plain PyTorch loop.

Same work on both sides: the quickstart model and data, 4 participants, 10 rounds, one local
epoch each, FedAvg in partition order, and the global model evaluated on train and test records
after every round. Nothing is recorded to the snapshot store on either side.

Printed: Ray start-up, Flower's first round (actor processes start and import torch), the
steady-state time of rounds 2..R on both sides, and their ratio (target: at most 1.3).

    python benchmarks/fl_overhead.py [--rounds 10] [--tiny]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ray
import torch
from tiny import shrink  # benchmarks/tiny.py

from fedattack.config import load_experiment
from fedattack.experiment import experiment_dataset, experiment_splits, initial_model
from fedattack.simulation import Resources, run_federated
from fedattack.training import (
    evaluate,
    get_weights,
    make_optimizer,
    set_lr,
    set_torch_threads,
    set_weights,
    train_epoch,
)
from strategies.inner import weighted_average

REPO = Path(__file__).resolve().parents[1]


def plain_loop(exp, round_times: list[float]) -> None:
    """FedAvg in one process: participants one after the other, all cores to each."""
    dataset = experiment_dataset(exp)
    splits = experiment_splits(exp, dataset)
    device = torch.device("cpu")
    global_model = initial_model(exp, dataset)
    weights = get_weights(global_model)
    local = initial_model(exp, dataset)
    for server_round in range(1, exp.federation.rounds + 1):
        uploads = []
        for pid, idx in enumerate(splits.partitions):
            set_weights(local, weights)
            opt = make_optimizer(local, exp.training)
            set_lr(opt, exp.training.lr)
            gen = torch.Generator().manual_seed(exp.seed * 1000 + server_round * 10 + pid)
            train_epoch(local, dataset, idx, opt, exp.training.batch_size, device, gen)
            uploads.append((get_weights(local), len(idx)))
        weights = weighted_average(uploads)
        set_weights(global_model, weights)
        evaluate(global_model, dataset, splits.members(), device)
        evaluate(global_model, dataset, splits.nonmembers, device)
        round_times.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tiny", action="store_true",
                        help="two participants, two rounds, small data (seconds; a check of "
                        "the script, its figures mean nothing)")
    args = parser.parse_args()
    exp = load_experiment(REPO / "experiments" / "quickstart.yaml")
    if args.tiny:
        exp = shrink(exp)
        args.rounds = exp.federation.rounds
    # Training only: no attack (the quickstart's reads rounds this run neither has nor records).
    exp = exp.model_copy(update={
        "name": "bench-fl-overhead", "attack": None,
        "federation": exp.federation.model_copy(update={"rounds": args.rounds,
                                                        "record_rounds": "none"})})
    experiment_splits(exp, experiment_dataset(exp))  # build/cache the data outside the timings
    res = Resources.for_experiment(exp)

    # Plain PyTorch: all cores to one process.
    set_torch_threads(res.total_cpus)
    plain = [time.perf_counter()]
    plain_loop(exp, plain)

    # Flower simulation: Ray started first, so its start-up is timed on its own.
    t0 = time.perf_counter()
    ray.init(num_cpus=res.total_cpus, include_dashboard=False, logging_level="ERROR")
    ray_startup = time.perf_counter() - t0
    flower = [time.perf_counter()]
    with tempfile.TemporaryDirectory() as tmp:
        run_federated(exp, Path(tmp) / "run",
                      on_round=lambda *a: flower.append(time.perf_counter()))
    flower_total = time.perf_counter() - flower[0]

    first_round = flower[1] - flower[0]
    flower_steady = flower[-1] - flower[1]
    plain_steady = plain[-1] - plain[1]
    steady_rounds = args.rounds - 1
    print(f"machine: {res.total_cpus} CPUs; Flower clients: {res.client_cpus} CPU each; "
          f"{exp.federation.num_participants} participants, {args.rounds} rounds")
    print(f"Ray start-up (ray.init):                  {ray_startup:7.2f} s")
    print(f"Flower first round (actors start + round): {first_round:7.2f} s")
    print(f"Flower whole simulation incl. shutdown:    {flower_total:7.2f} s")
    print(f"plain loop, first round:                   {plain[1] - plain[0]:7.2f} s")
    print(f"steady rounds 2..{args.rounds}: Flower {flower_steady:.2f} s "
          f"({flower_steady / steady_rounds:.3f} s/round), plain {plain_steady:.2f} s "
          f"({plain_steady / steady_rounds:.3f} s/round)")
    ratio = flower_steady / plain_steady
    print(f"ratio Flower / plain, excluding start-up: {ratio:.2f} (target <= 1.3: "
          f"{'met' if ratio <= 1.3 else 'NOT met'})")
    total_ratio = (ray_startup + flower_total) / (plain[-1] - plain[0])
    print(f"ratio including Ray start-up and first round: {total_ratio:.2f}")


if __name__ == "__main__":
    main()
