"""Gradient inversion: what one step of Inverting Gradients costs, and how it compares with
`breaching` (pip `breaching`, Geiping et al.'s own library) on the same problem.

Work: the project's small CNN (`cnn`, about 0.42M parameters) on `--records` MNIST-shaped
records (real MNIST when installed, else random pixels), the victim's FedSGD update (one SGD
step on all its records) or, with `--steps K`, a FedAvg update of K local steps.

`cost` (default) times, in the same process and on the same threads, each best of `--repeats`
after a warm-up:
  reference  one forward and backward pass of the model on the n records (the victim's step)
  batched    one attack step of R restarts at once (fedattack.inversion: vmap over restarts)
  looped     R attack steps of one restart each (what restarts cost without batching)
(`--clock cpu`: process CPU time, where other work shares the cores) and prints
step / (R x reference): the cost of one restart's step in forward+backward passes,
and looped / batched, what batching the restarts buys.

`breaching` runs the project's Inverting Gradients and breaching's `invertinggradients` attack
on the same model, record and gradient, with the same iterations, restarts, step size, pixel box
and step-size decay, and prints PSNR and wall time side by side with their ratios. Both run
without the total-variation prior: breaching's (v0.1.2) is written for three colour channels
and fails on MNIST's one. breaching needs
torchvision, which does not import beside the project's CPU torch: run this mode from a venv
with torch and torchvision from the same build (see the report of issue 29). Without breaching
it prints one line saying so and exits 0.

    PYTHONPATH=. python benchmarks/inversion.py [cost] [--records 4] [--restarts 4] [--tiny]
    PYTHONPATH=. python benchmarks/inversion.py breaching [--iterations 500]
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from fedattack.inversion import (
    InversionTarget,
    LocalRecipe,
    UpdateMatcher,
    pixel_range,
    registry,
)
from fedattack.inversion.core import total_variation
from fedattack.inversion.metrics import psnr_matrix
from fedattack.models import build_model
from fedattack.training import resolve_device

SHAPE, CLASSES = (1, 28, 28), 10


def records(n: int) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
    """n MNIST records (model inputs), their labels, and the data's mean and std; random pixels
    when MNIST is not installed."""
    from fedattack.data import DatasetUnavailable, load_dataset

    try:
        data = load_dataset("mnist")
    except DatasetUnavailable:
        g = torch.Generator().manual_seed(0)
        return (torch.rand((n, *SHAPE), generator=g), torch.arange(n) % CLASSES, (0.0,), (1.0,))
    x, y = data.batch(np.arange(n))
    return x, y, data.mean, data.std


def problem(n: int, steps: int, device: torch.device) -> tuple[InversionTarget, torch.Tensor]:
    """The victim's update of the CNN on n records: one SGD step on all of them, or `steps`
    steps on batches of n / steps."""
    x, y, mean, std = records(n)
    torch.manual_seed(0)
    model = build_model("cnn", SHAPE, CLASSES, "relu")
    recipe = LocalRecipe(n, max(1, n // steps), lr=0.01)
    broadcast = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr)
    for batch in recipe.batches:
        optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    low, high = pixel_range(mean, std)
    return InversionTarget(model, broadcast, model.state_dict(), recipe, SHAPE, CLASSES, low,
                           high), x.to(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_time(fn, repeats: int, sync, clock) -> float:
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return min(times)


def cost(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    target, x = problem(args.records, args.steps, device)
    matcher = UpdateMatcher(target, device)
    labels = F.one_hot(torch.arange(args.records) % CLASSES, CLASSES).float().to(device)
    model = matcher.model

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def reference() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels.argmax(1)).backward()

    def attack_step(restarts: int):
        dummy = torch.randn((restarts, *x.shape), device=device, requires_grad=True)

        def step() -> None:
            dummy.grad = None
            objective = matcher.distances(dummy, labels, "cosine") + 1e-2 * total_variation(dummy)
            objective.sum().backward()

        return step

    r, clock = args.restarts, CLOCKS[args.clock]
    ref = best_time(reference, args.repeats, sync, clock)
    batched = best_time(attack_step(r), args.repeats, sync, clock)
    single = attack_step(1)
    looped = best_time(lambda: [single() for _ in range(r)], args.repeats, sync, clock)
    out = {"device": str(device), "clock": args.clock, "records": args.records,
           "local_steps": target.recipe.steps,
           "restarts": r, "reference_s": ref, "batched_s": batched, "looped_s": looped,
           "step_per_restart_over_reference": batched / (r * ref),
           "looped_over_batched": looped / batched}
    print(f"{device}, {args.records} record(s), {target.recipe.steps} local step(s), {r} "
          f"restarts: one forward+backward {ref * 1e3:.1f} ms, attack step {batched * 1e3:.1f} "
          f"ms batched, {looped * 1e3:.1f} ms looped")
    print(f"  one restart's step / one forward+backward: "
          f"{out['step_per_restart_over_reference']:.1f}")
    print(f"  looped / batched restarts: {out['looped_over_batched']:.2f}")
    return out


def breaching_reconstruction(target: InversionTarget, gradient: list[torch.Tensor],
                             mean, std, args: argparse.Namespace):
    """breaching's Inverting Gradients on the same model and gradient, through its public API."""
    import breaching

    cfg = breaching.get_attack_config("invertinggradients", overrides=[
        f"optim.max_iterations={args.iterations}", f"restarts.num_trials={args.restarts}",
        f"optim.step_size={args.lr}", "~regularization.total_variation",
        f"optim.callback={args.iterations}"])
    model = target.model
    model.load_state_dict(target.broadcast)
    attacker = breaching.attacks.prepare_attack(model, torch.nn.CrossEntropyLoss(), cfg)
    metadata = SimpleNamespace(shape=SHAPE, mean=mean, std=std, modality="vision",
                               classes=CLASSES)
    server = [{"parameters": [p.detach() for p in model.parameters()], "buffers": None,
               "metadata": metadata}]
    user = [{"gradients": gradient, "buffers": None,
             "metadata": {"num_data_points": 1, "labels": None, "local_hyperparams": None}}]
    reconstruction, _ = attacker.reconstruct(server, user, {}, dryrun=False)
    return reconstruction["data"].detach()


def compare_with_breaching(args: argparse.Namespace) -> dict | None:
    try:
        import breaching  # noqa: F401
    except Exception as err:  # not installed, or torchvision broken beside this torch
        reason = str(err).splitlines()[0] if str(err) else "no message"
        print(f"skipped: breaching (pip `breaching`) cannot be imported here "
              f"({type(err).__name__}: {reason})")
        return None
    target, x = problem(1, 1, torch.device("cpu"))
    _, _, mean, std = records(1)
    gradient = [-(target.upload[name] - target.broadcast[name]) / target.recipe.lr
                for name, _ in target.model.named_parameters()]
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def psnr(rec: torch.Tensor) -> float:
        return float(psnr_matrix((rec * std_t + mean_t).clamp(0, 1),
                                 (x * std_t + mean_t).clamp(0, 1))[0, 0])

    attack = registry.get("inverting-gradients")
    params = attack.parameters({"iterations": args.iterations, "restarts": args.restarts,
                                "lr": args.lr, "tv": 0.0})
    clock = CLOCKS[args.clock]
    start = clock()
    ours = attack.run(target, params).x
    ours_s = clock() - start
    start = clock()
    theirs = breaching_reconstruction(target, gradient, mean, std, args)
    theirs_s = clock() - start
    out = {"clock": args.clock, "iterations": args.iterations, "restarts": args.restarts,
           "psnr": psnr(ours),
           "breaching_psnr": psnr(theirs), "time_s": ours_s, "breaching_time_s": theirs_s}
    print(f"{args.iterations} iterations, {args.restarts} restarts, one MNIST record, cnn:")
    print(f"  PSNR  fedattack {out['psnr']:.2f} dB, breaching {out['breaching_psnr']:.2f} dB, "
          f"difference {out['psnr'] - out['breaching_psnr']:+.2f} dB")
    print(f"  time ({args.clock})  fedattack {ours_s:.1f} s, breaching {theirs_s:.1f} s, "
          f"breaching / fedattack {theirs_s / ours_s:.2f}")
    return out


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", nargs="?", choices=("cost", "breaching"), default="cost")
    ap.add_argument("--records", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1, help="local steps of the victim's update")
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=500, help="breaching mode")
    ap.add_argument("--lr", type=float, default=0.1, help="breaching mode: step size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                    help="cpu: process CPU time, for a machine shared with other work")
    ap.add_argument("--tiny", action="store_true", help="1 record, 2 restarts, 2 repeats, "
                    "5 iterations: for a test")
    args = ap.parse_args(argv)
    if args.tiny:
        args.records, args.restarts, args.repeats, args.iterations = 1, 2, 2, 5
    return cost(args) if args.mode == "cost" else compare_with_breaching(args)


if __name__ == "__main__":
    main()
