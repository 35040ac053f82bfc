"""Measure GAN sweep experiments, including ones stopped before their last round.

    python docs/results/gan-sweep/measure.py EXPERIMENT_DIR [...] --out docs/results/gan-sweep

A federation's first R rounds do not depend on how many follow (benchmarks/gan_sweep.py), so an
experiment stopped at a round boundary holds the runs of every budget up to that round. For each
directory whose measure did not run (no results.json) this runs the project's measure
(fedattack.reconstruction.measure_attack) on the rounds the attacker recorded, which writes
gan/rounds.json and results.json there; a finished experiment is read as it is. runs.json lists
every experiment with its configured rounds, the last round it reached and whether it stopped
early, for the README (readme.py) to say what was and was not run; each experiment's
gan/rounds.json and results.json are copied to OUT/<campaign>/<experiment>/ (the per-round
measures the success figures are drawn from; snapshots are not kept).

A directory where the attacker recorded a round that run.json's history does not hold (stopped
inside a round) is refused: stop a run between rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from fedattack.config import load_experiment
from fedattack.experiment import CONFIG_FILE, RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.reconstruction import ROUNDS_FILE, measure_attack
from fedattack.snapshots import GENERATED_KIND, SnapshotStore, local_view


def measure(exp_dir: Path) -> dict:
    exp = load_experiment(exp_dir / CONFIG_FILE)
    run = read_json(exp_dir / RUN_FILE)
    trained = {h["round"] for h in run["history"]}
    if not (exp_dir / "results.json").exists():
        view = SnapshotStore(exp_dir / SNAPSHOT_DIR).view(local_view(exp.gan.attacker))
        recorded = {r.round for r in view.records(kind=GENERATED_KIND)}
        if recorded - trained:
            raise SystemExit(f"{exp_dir}: samples of round(s) {sorted(recorded - trained)} "
                             f"without their history: stopped inside a round")
        measure_attack(exp, exp_dir)
    per_round = read_json(exp_dir / ROUNDS_FILE)
    reached = max(trained)
    campaign_file = exp_dir.parent / "campaign.yaml"
    campaign = (yaml.safe_load(campaign_file.read_text())["campaign"]
                if campaign_file.exists() else None)
    return {"campaign": campaign, "experiment": exp_dir.name,
            "dataset": exp.data.dataset, "seed": exp.seed, "dp": exp.privacy is not None,
            "generator_steps": exp.gan.generator_steps,
            "configured_rounds": exp.federation.rounds, "reached_round": reached,
            "stopped_early": reached < exp.federation.rounds,
            "measured_rounds": len(per_round), "training_status": run.get("status"),
            "training_wall_s": run["history"][-1].get("elapsed_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    for exp_dir in args.experiment_dirs:
        row = measure(exp_dir)
        kept = args.out / (row["campaign"] or "experiments") / row["experiment"]
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exp_dir / ROUNDS_FILE, kept / "rounds.json")
        shutil.copyfile(exp_dir / "results.json", kept / "results.json")
        rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runs.json").write_text(json.dumps(rows, indent=1) + "\n")
    for r in rows:
        print(f"{r['experiment']}: rounds {r['reached_round']} of {r['configured_rounds']}")


if __name__ == "__main__":
    main()
