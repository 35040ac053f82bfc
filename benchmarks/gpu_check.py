"""GPU check: the quickstart on CUDA against a CPU run of the same seed.

Runs the experiment twice, once with ``device: cpu`` (the reference) and once with the device
under test (``--device``, default cuda; participants share the GPU, ``client_gpus`` =
1/participants), and times three stages on each: training (the Flower simulation, Ray's start-up
included), features (the white-box attack's feature extraction of known members, known
non-members and targets) and the attack network (the white-box attack's training and
prediction). Then it checks, within the tolerances below, that the device computes what the CPU
computes:

- features: the reference run's snapshots, their features extracted on the device, differ from
  those extracted on the CPU by at most FEATURE_RTOL (relative to the largest magnitude of each
  component): the same models and records, so only float rounding may differ;
- round 1: the global model after one round of the device run differs from the reference's by at
  most ROUND1_ATOL in every weight (same initial model and batches; GPU kernels round differently);
- training: the final train and test accuracies differ by at most ACCURACY_ATOL (rounding
  differences grow over the rounds; the runs are not expected to be bit-identical);
- attack: the white-box attack's AUC differs by at most AUC_ATOL.

Prints absolute times per stage and the speed-up (CPU time / device time). Exit 0 when every
check holds, 1 when one fails, 2 on bad arguments or a device that is not available.

    python benchmarks/gpu_check.py                     # the quickstart, cuda against cpu
    python benchmarks/gpu_check.py --device cpu --tiny # the check itself, on a CPU-only machine
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tiny import shrink  # benchmarks/tiny.py

from fedattack.config import Experiment, load_experiment
from fedattack.data import victim_names
from fedattack.experiment import SNAPSHOT_DIR, prepare_run
from fedattack.features import FeatureExtractor
from fedattack.membership import AttackContext, AttackOutcome, attack_input, evaluate_in_run
from fedattack.runner import train_target
from fedattack.snapshots import SnapshotStore

REPO = Path(__file__).resolve().parents[1]
FEATURE_RTOL = 1e-4
ROUND1_ATOL = 1e-4
ACCURACY_ATOL = 0.05
AUC_ATOL = 0.05
STAGES = ("training", "features", "attack network")


def on_device(exp: Experiment, device: str) -> Experiment:
    federation = exp.federation.model_copy(
        update={"client_gpus": 1.0 / exp.federation.num_participants if device != "cpu" else 0.0})
    return exp.model_copy(update={"device": device, "federation": federation})


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pipeline(exp: Experiment, run_dir: Path, device: str) -> dict:
    """Train, extract the white-box features, train and apply the attack network, timing each."""
    exp = on_device(exp, device)
    prepared = prepare_run(exp, run_dir)
    times = {}
    started = time.perf_counter()
    record = train_target(prepared, show_progress=False, verbose=False)
    times["training"] = time.perf_counter() - started

    dataset = prepared.dataset
    victim = victim_names(run_dir)[0]
    runner = AttackContext(attack_input(exp, run_dir, dataset, victim, log=lambda _: None))
    knowledge = runner.knowledge
    started = time.perf_counter()
    caches = {part: runner.features(f"whitebox-{part}", runner.spec, getattr(knowledge, part))
              for part in ("known_members", "known_nonmembers", "targets")}
    synchronize(device)
    times["features"] = time.perf_counter() - started

    started = time.perf_counter()
    attack = runner.whitebox_attack("whitebox").fit(caches["known_members"],
                                                     caches["known_nonmembers"])
    scores = attack.predict_proba(caches["targets"])
    synchronize(device)
    times["attack network"] = time.perf_counter() - started
    metrics = evaluate_in_run(run_dir, knowledge, AttackOutcome("whitebox", "", scores),
                              (exp.seed, 0)).figures
    last = record["history"][-1]
    return {"times": times, "auc": metrics.auc, "train_accuracy": last["train_accuracy"],
            "test_accuracy": last["test_accuracy"], "obs": runner.obs, "runner": runner,
            "knowledge": knowledge, "dataset": dataset}


def global_weights(run_dir: Path, server_round: int) -> list[np.ndarray]:
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    (rec,) = store.records(view="global", kind="global", round=server_round)
    return store.read_arrays(rec)


def feature_difference(ref: dict, device: str, folder: Path) -> float:
    """Largest relative difference between the reference run's features extracted on the CPU
    (its cache) and on `device`, over every component."""
    runner = ref["runner"]
    extractor = FeatureExtractor(ref["obs"].models, runner.spec, ref["dataset"].num_classes,
                                 torch.device(device), runner.cfg.memory_mb)
    indices = ref["knowledge"].targets
    got = extractor.cache(ref["dataset"], indices, folder / "device-targets")
    want = runner.features("whitebox-targets", runner.spec, indices)
    rows = np.arange(len(indices))
    worst = 0.0
    for key, expected in want.take(rows).items():
        actual = got.take(rows)[key]
        scale = max(float(expected.abs().max()), 1e-12)
        worst = max(worst, float((actual - expected).abs().max()) / scale)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "experiments" / "quickstart.yaml")
    parser.add_argument("--device", default="cuda", help="device under test: cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="shrink the experiment (seconds)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: device {args.device} requested but CUDA is not available "
              "(no GPU on this machine; --device cpu checks the script itself)", file=sys.stderr)
        return 2
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        print(f"error: --device takes cuda, cuda:N or cpu, got {args.device!r}", file=sys.stderr)
        return 2
    exp = load_experiment(args.config)
    if exp.scenario != "federated" or exp.attack is None or "whitebox" not in exp.attack.attacks:
        print(f"error: {args.config} must be a federated experiment with the white-box attack",
              file=sys.stderr)
        return 2
    exp = shrink(exp) if args.tiny else exp
    name = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "cpu"
    print(f"{exp.name}: device {args.device} ({name}) against cpu, seed {exp.seed}, "
          f"torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ref = pipeline(exp, tmp / "cpu", "cpu")
        dev = pipeline(exp, tmp / "device", args.device)
        checks = {
            "features": (feature_difference(ref, args.device, tmp), FEATURE_RTOL),
            "round-1 global model": (max(float(np.abs(a - b).max()) for a, b in zip(
                global_weights(tmp / "cpu", 1), global_weights(tmp / "device", 1),
                strict=True)), ROUND1_ATOL),
            "train accuracy": (abs(ref["train_accuracy"] - dev["train_accuracy"]), ACCURACY_ATOL),
            "test accuracy": (abs(ref["test_accuracy"] - dev["test_accuracy"]), ACCURACY_ATOL),
            "white-box AUC": (abs(ref["auc"] - dev["auc"]), AUC_ATOL),
        }

    print(f"\n| stage | cpu (s) | {args.device} (s) | speed-up |\n|---|---:|---:|---:|")
    for stage in STAGES:
        cpu_s, dev_s = ref["times"][stage], dev["times"][stage]
        print(f"| {stage} | {cpu_s:.2f} | {dev_s:.2f} | {cpu_s / dev_s:.2f}x |")
    total_cpu, total_dev = sum(ref["times"].values()), sum(dev["times"].values())
    print(f"| total | {total_cpu:.2f} | {total_dev:.2f} | {total_cpu / total_dev:.2f}x |")
    print(f"\ncpu: train accuracy {ref['train_accuracy']:.3f}, test accuracy "
          f"{ref['test_accuracy']:.3f}, white-box AUC {ref['auc']:.3f}")
    print(f"{args.device}: train accuracy {dev['train_accuracy']:.3f}, test accuracy "
          f"{dev['test_accuracy']:.3f}, white-box AUC {dev['auc']:.3f}\n")
    failed = []
    for check, (difference, tolerance) in checks.items():
        ok = difference <= tolerance
        failed += [] if ok else [check]
        print(f"{'ok  ' if ok else 'FAIL'} {check}: difference {difference:.3g} "
              f"(tolerance {tolerance:g})")
    if args.json:
        args.json.write_text(json.dumps({
            "experiment": exp.name, "device": args.device, "device_name": name,
            "times_s": {"cpu": ref["times"], args.device: dev["times"]},
            "checks": {k: {"difference": d, "tolerance": t} for k, (d, t) in checks.items()},
            "failed": failed}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
