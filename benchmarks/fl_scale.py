"""Federations of 10, 100 and 1,000 participants, 10 sampled per round: the Flower simulation
against a plain PyTorch loop doing the same sampled work.

Each size runs in a process of its own (so that its peak memory is its own; the synthetic
dataset is built beforehand in another process): the Flower simulation of `rounds` rounds (the
quickstart's model on the Purchase100 stand-in, `records` records per participant,
`federation.clients_per_round: 10`, every round recorded), then a plain loop that trains, in one
process, the very participants Flower sampled in each round (read from run.json), averages them
the same way and records the same snapshots. Printed per size: the steady-state round time of
both (rounds 2..R: round 1 includes asking every node its partition) and their ratio (target: at
most 1.3), the peak resident memory of the process that ran the server (target: flat in the
number of participants), and the snapshot bytes written per round against (sampled uploads + 1
global model) x the model's size (target: 1.0, i.e. proportional to the sampled clients only).

    python benchmarks/fl_scale.py [--sizes 10 100 1000] [--rounds 4] [--records 20] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLED = 10


def experiment(n: int, rounds: int, records: int):
    from fedattack.config import load_experiment

    exp = load_experiment(REPO / "experiments" / "quickstart.yaml")
    knowledge = exp.data.knowledge.model_copy(update={"train_members": 50, "test_members": 50,
                                                      "train_nonmembers": 50,
                                                      "test_nonmembers": 50})
    data = exp.data.model_copy(update={"num_records": n * records + 500, "train_size": records,
                                       "nonmember_size": 500, "knowledge": knowledge})
    fed = exp.federation.model_copy(update={"num_participants": n, "rounds": rounds,
                                            "record_rounds": "all",
                                            "clients_per_round": min(SAMPLED, n)})
    return exp.model_copy(update={"name": f"bench-fl-scale-{n}", "data": data,
                                  "federation": fed, "attack": None})


def plain_loop(exp, accepted: list[list[int]], times: list[float], store_dir: Path) -> None:
    """FedAvg over the given participants of each round, one after the other, in one process,
    recording what the aggregator records (each upload and the new global model)."""
    import torch

    from fedattack.experiment import experiment_dataset, experiment_splits, initial_model
    from fedattack.snapshots import Snapshot, SnapshotStore
    from fedattack.training import (
        evaluate,
        get_weights,
        make_optimizer,
        set_lr,
        set_weights,
        train_epoch,
    )
    from strategies.inner import weighted_average

    dataset = experiment_dataset(exp)
    splits = experiment_splits(exp, dataset)
    device = torch.device("cpu")
    global_model = initial_model(exp, dataset)
    weights = get_weights(global_model)
    local = initial_model(exp, dataset)
    names = list(global_model.state_dict())
    store = SnapshotStore(store_dir)
    store.write("global", "global", 0, list(zip(names, weights, strict=True)))
    for server_round, pids in enumerate(accepted, start=1):
        uploads, observed = [], []
        for pid in pids:
            set_weights(local, weights)
            opt = make_optimizer(local, exp.training)
            set_lr(opt, exp.training.lr)
            gen = torch.Generator().manual_seed(exp.seed * 1000 + server_round * 10 + pid)
            idx = splits.partitions[pid]
            train_epoch(local, dataset, idx, opt, exp.training.batch_size, device, gen)
            uploads.append((get_weights(local), len(idx)))
            observed.append(Snapshot("upload", server_round,
                                     list(zip(names, uploads[-1][0], strict=True)), pid))
        weights = weighted_average(uploads)
        observed.append(Snapshot("global", server_round, list(zip(names, weights, strict=True))))
        store.write_many("global", observed)  # one manifest write a round, as the recorder's
        set_weights(global_model, weights)
        evaluate(global_model, dataset, splits.members(), device)
        evaluate(global_model, dataset, splits.nonmembers, device)
        times.append(time.perf_counter())


def one_size(n: int, rounds: int, records: int) -> dict:
    """Run one size (in this process); return its figures."""
    from fedattack.experiment import experiment_dataset, experiment_splits
    from fedattack.io import read_json
    from fedattack.simulation import Resources, run_federated
    from fedattack.training import set_torch_threads

    exp = experiment(n, rounds, records)
    experiment_splits(exp, experiment_dataset(exp))  # loaded (built by --build) before timing
    set_torch_threads(Resources.for_experiment(exp).total_cpus)
    flower = [time.perf_counter()]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_federated(exp, run_dir, on_round=lambda *a: flower.append(time.perf_counter()))
        server_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        record = read_json(run_dir / "run.json")
        accepted = [r["accepted"] for r in record["rounds"]]
        snapshots = run_dir / "snapshots" / "global"
        written = sum(f.stat().st_size for f in snapshots.glob("*.safetensors"))
        model_bytes = max(f.stat().st_size for f in snapshots.glob("*.safetensors"))
    plain = [time.perf_counter()]
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(exp, accepted, plain, Path(tmp) / "snapshots")
    steady = rounds - 1
    return {
        "participants": n, "sampled": min(SAMPLED, n), "rounds": rounds,
        "flower_round_s": (flower[-1] - flower[1]) / steady,
        "plain_round_s": (plain[-1] - plain[1]) / steady,
        "flower_first_round_s": flower[1] - flower[0],
        "server_peak_bytes": server_peak,
        "snapshot_bytes_per_round": written / rounds,
        # per round: each sampled upload and the new global model (round 0's model once)
        "expected_bytes_per_round": (sum(len(a) for a in accepted) + rounds + 1) * model_bytes
        / rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--tiny", action="store_true",
                        help="federations of 2 and 3, two rounds, 50 records each (seconds; a "
                        "check of the script, its figures mean nothing)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.sizes, args.rounds, args.records = [2, 3], 2, 50
    if args.build:  # the synthetic dataset, built and cached before the measured process
        from fedattack.experiment import experiment_dataset, experiment_splits

        exp = experiment(args.build, args.rounds, args.records)
        experiment_splits(exp, experiment_dataset(exp))
        return
    if args.one:
        print(json.dumps(one_size(args.one, args.rounds, args.records)))
        return
    rows = []
    for n in args.sizes:
        for step in ("--build", "--one"):
            done = subprocess.run([sys.executable, __file__, step, str(n), "--rounds",
                                   str(args.rounds), "--records", str(args.records)],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                sys.exit(f"{n} participants failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["server_peak_bytes"]
    print(f"{SAMPLED} participants sampled per round, {args.rounds} rounds, {args.records} "
          "records each; steady state = rounds 2..R")
    print("| participants | Flower s/round | plain s/round | ratio (<= 1.3) | first round s "
          "| server peak MiB | vs smallest | snapshot MiB/round | vs (sampled+1) models |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["flower_round_s"] / r["plain_round_s"]
        print(f"| {r['participants']} | {r['flower_round_s']:.3f} | {r['plain_round_s']:.3f} "
              f"| {ratio:.2f} | {r['flower_first_round_s']:.1f} "
              f"| {r['server_peak_bytes'] / 2**20:.0f} | {r['server_peak_bytes'] / base:.2f} "
              f"| {r['snapshot_bytes_per_round'] / 2**20:.1f} "
              f"| {r['snapshot_bytes_per_round'] / r['expected_bytes_per_round']:.2f} |")


if __name__ == "__main__":
    main()
