"""How long parsing an experiment YAML takes, against `import torch` (issue 26.6).

Work: in a fresh interpreter each time (the imports are what is measured, and a process imports
each module once), (a) `from fedattack.config import load_experiment; load_experiment(PATH)`
(default: experiments/quickstart.yaml, whose `attack:` block makes the config read every
registered attack's parameters and checks), and (b) `import torch`. Each child times its own work
with the wall clock and with its process CPU time (on a machine with more runnable processes than
cores the wall clock also counts the waits for a core), so interpreter start-up is left out.
The two alternate `--rounds` times (round r starts with (b) when r is odd, so that load from
other processes falls on both alike); each one's fastest round counts. Printed: both times, the
ratio parse / import torch (target: well below 1; it was about 2 when parsing imported every
attack's torch, scipy and scikit-learn), and whether parsing imported torch, Flower or Ray.

    PYTHONPATH=. python benchmarks/parse_time.py [--config experiments/quickstart.yaml]
        [--rounds 5] [--root CHECKOUT] [--tiny]

The package measured is the one the child imports (printed): that of `--root`, the checkout the
children run in (default: this one), so that another checkout (the code before a change) is
measured by the same script: `--root ../main`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMED = """
import json, sys, time
wall, cpu = time.perf_counter(), time.process_time()
{work}
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "flwr", "ray"}})
print(json.dumps({{"wall": wall, "cpu": cpu, "heavy": heavy, "where": where}}))
"""

PARSE = """from fedattack.config import load_experiment
load_experiment({path!r})
import fedattack
where = fedattack.__file__"""

TORCH = """import torch
where = torch.__file__"""


def child(work: str, root: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", TIMED.format(work=work)], cwd=root,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ))
    if done.returncode != 0:
        raise SystemExit(f"the child failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/quickstart.yaml")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="the checkout whose fedattack is measured (the children's directory)")
    ap.add_argument("--tiny", action="store_true",
                    help="one round (seconds; a check of the script, its figures mean little)")
    args = ap.parse_args()
    if args.tiny:
        args.rounds = 1
    root = args.root.resolve()
    path = str(root / args.config)
    works = {"parse": PARSE.format(path=path), "torch": TORCH}
    runs: dict[str, list[dict]] = {"parse": [], "torch": []}
    for r in range(args.rounds):
        for name in (("torch", "parse") if r % 2 else ("parse", "torch")):
            runs[name].append(child(works[name], root))
    best = {name: {clock: min(run[clock] for run in rs) for clock in ("wall", "cpu")}
            for name, rs in runs.items()}
    heavy = sorted({m for run in runs["parse"] for m in run["heavy"]})
    label = Path(args.config).name
    print(f"package: {Path(runs['parse'][0]['where']).parent}; torch: "
          f"{Path(runs['torch'][0]['where']).parent}; fastest of {args.rounds} round(s)")
    print("| what | wall s | CPU s |")
    print("| --- | --- | --- |")
    print(f"| parse {label} | {best['parse']['wall']:.3f} | {best['parse']['cpu']:.3f} |")
    print(f"| import torch | {best['torch']['wall']:.3f} | {best['torch']['cpu']:.3f} |")
    print(f"ratio parse / import torch: wall {best['parse']['wall'] / best['torch']['wall']:.3f}, "
          f"CPU {best['parse']['cpu'] / best['torch']['cpu']:.3f}")
    print(f"imported by parsing: {', '.join(heavy) if heavy else 'none of torch, flwr, ray'}")


if __name__ == "__main__":
    main()
