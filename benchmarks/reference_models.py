"""Reference models trained together versus one after the other (fedattack.attacks.references).

Work: K (default 8) Purchase FC references (`build_model("purchase-fc", (600,), 100)`, Adam lr
1e-3, batch 64, the quickstart's recipe) on `--records` stand-in records each (paired random
halves of 2 x records), for `--epochs` epochs:
  one        one reference trained alone by fedattack.training.train_model
  sequential the K references trained one after the other (train_sequential)
  together   the K references trained in one pass (train_vectorised: batched matrix
             products per Linear layer)
Timed in the same process on the same threads, after one warm-up epoch of each path, each path
`--rounds` times in turn (round r starts with path r mod 3, so that load from other processes
falls on all alike); each path's best round counts. `--clock cpu` times process CPU time
instead of the wall clock (on a machine with more runnable threads than cores the wall clock
also counts the waits for a core; with one thread on a quiet machine the two agree).
Printed: together / one (target: at most 3) and sequential / together, and the largest
difference between a vectorised and a sequential reference's parameters.

    PYTHONPATH=. python benchmarks/reference_models.py [--epochs 5] [--records 1000] [--k 8]
        [--tiny]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fedattack.attacks.references import paired_halves, train_sequential, train_vectorised
from fedattack.config import TrainConfig
from fedattack.data import load_dataset
from fedattack.models import build_model
from fedattack.training import resolve_device, train_model


def build(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("purchase-fc", (600,), 100, "tanh")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--records", type=int, default=1000, help="training records per reference")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--tiny", action="store_true",
                    help="2 references, 100 records, 1 epoch, 1 round on a small variant of the "
                    "data set (seconds; a check of the script, its figures mean nothing)")
    args = ap.parse_args()
    if args.tiny:
        args.k, args.records, args.epochs, args.rounds = 2, 100, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_dataset("purchase100-synth", num_records=2000 if args.tiny else None)
    sets = paired_halves(np.arange(2 * args.records), args.k, seed=0)
    seeds = [100 + k for k in range(args.k)]
    cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=64)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def one(epochs=args.epochs):
        model = build(seeds[0])
        train_model(model, data, sets[0], None, cfg, epochs, device, seeds[0])
        return [model.cpu()]

    def sequential(epochs=args.epochs):
        return train_sequential([build(s) for s in seeds], data, sets, seeds, cfg, epochs,
                                device)

    def together(epochs=args.epochs):
        return train_vectorised([build(s) for s in seeds], data, sets, seeds, cfg, epochs,
                                device)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    paths = {"one": one, "sequential": sequential, "together": together}
    for path in paths.values():  # warm-up: allocator, thread pool, the data set's pages
        path(1)
    best = dict.fromkeys(paths, float("inf"))
    kept = {}
    for r in range(args.rounds):
        names = list(paths)
        for name in names[r % 3:] + names[: r % 3]:
            sync()
            start = clock()
            kept[name] = paths[name]()
            sync()
            best[name] = min(best[name], clock() - start)
    diff = max(float((a - b).detach().abs().max())
               for ma, mb in zip(kept["together"], kept["sequential"], strict=True)
               for a, b in zip(ma.parameters(), mb.parameters(), strict=True))
    print(f"K={args.k} Purchase FC references, {args.records} records each, {args.epochs} "
          f"epochs, device {device}, {torch.get_num_threads()} thread(s), {args.clock} clock, "
          f"best of {args.rounds}")
    for name, seconds in best.items():
        print(f"  {name:<10} {seconds:8.2f} s")
    print(f"  together / one        = {best['together'] / best['one']:.2f} (target <= 3)")
    print(f"  sequential / together = {best['sequential'] / best['together']:.2f}")
    print(f"  max |together - sequential| over parameters = {diff:.2e}")


if __name__ == "__main__":
    main()
