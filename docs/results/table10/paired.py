"""Paired AUC differences, active minus passive, from a finished Table X campaign directory.

Every experiment of a Table X campaign has the same seed, hence the same splits and the same
targets; an active row and its passive twin (global-passive for a global attacker, local-passive
for a local one) are therefore scored on the same records, and their AUC difference has a paired
bootstrap interval far narrower than the two rows' own intervals side by side. The targets are
resampled within members and within non-members (as fedattack.metrics resamples a row), the
same resample for both rows. An ascending isolating attacker is also compared with the isolating
one without the ascent.

    python docs/results/table10/paired.py RUN_DIR OUT.json

reads RUN_DIR/<experiment>/{attacks/<attack>-scores.npy, splits/} (one victim per experiment)
and writes the differences with their 95% intervals.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fedattack.data import load_knowledge, load_membership, victim_names
from fedattack.metrics import auc

RESAMPLES = 2000


def scored_targets(run_dir: Path, attack: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(targets, membership labels, scores) of the experiment's one victim."""
    (victim,) = victim_names(run_dir)
    targets = load_knowledge(run_dir, victim).targets
    labels = np.isin(targets, load_membership(run_dir).victim(victim).target_members)
    return targets, labels.astype(int), np.load(run_dir / "attacks" / f"{attack}-scores.npy")


def paired_difference(labels, active, passive, seed: int = 0) -> dict:
    """AUC(active) - AUC(passive) on the same targets, with its stratified paired bootstrap
    95% interval."""
    rng = np.random.default_rng(seed)
    members, nonmembers = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    draws = []
    for _ in range(RESAMPLES):
        idx = np.r_[rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers))]
        draws.append(auc(labels[idx], active[idx]) - auc(labels[idx], passive[idx]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"difference": round(auc(labels, active) - auc(labels, passive), 4),
            "ci": [round(float(low), 4), round(float(high), 4)]}


def twins(name: str, run_dir: Path) -> list[str]:
    """What an active experiment is compared with: its passive twin, and for an ascending
    isolating attacker the same attacker without the ascent."""
    found = ["local-passive" if name.startswith("local") else "global-passive"]
    stem = name.removesuffix("-gradient-ascent")
    if stem != name and (run_dir / stem / "attacks").is_dir():
        found.append(stem)
    return found


def campaign_differences(run_dir: Path) -> list[dict]:
    rows = []
    for folder in sorted(p for p in run_dir.iterdir() if (p / "attacks").is_dir()):
        if folder.name.endswith("passive"):
            continue
        for scores in sorted((folder / "attacks").glob("*-scores.npy")):
            attack = scores.name.removesuffix("-scores.npy")
            for other in twins(folder.name, run_dir):
                if not (run_dir / other / "attacks" / scores.name).exists():
                    continue
                targets, labels, active = scored_targets(folder, attack)
                same, _, baseline = scored_targets(run_dir / other, attack)
                if not np.array_equal(targets, same):
                    raise ValueError(f"{folder.name} and {other} differ in targets")
                rows.append({"experiment": folder.name, "against": other, "attack": attack,
                             **paired_difference(labels, active, baseline)})
    return rows


if __name__ == "__main__":
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.write_text(json.dumps(campaign_differences(source), indent=1) + "\n")
