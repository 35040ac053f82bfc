"""Keep what the before/after table needs from a finished Table X campaign directory.

    python docs/results/table10/export.py RUN_DIR OUT_DIR

For every experiment of RUN_DIR that has results, OUT_DIR/<experiment>/ receives its
results.json as the run wrote it, and scores.json: the victim's evaluation targets (dataset
indices), their membership labels (1 = the victim trained on it) and each attack's score per
target, in the order of the targets. Those are a few kilobytes and let render.py compute paired
intervals (one bootstrap resample for two rows scored on the same targets) without the run
directory; snapshots and features are not kept. The campaign file the run was made from is
copied as OUT_DIR/<campaign>.yaml, so several campaigns of one phase can share OUT_DIR.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired import scored_targets  # noqa: E402

SCORES_FILE = "scores.json"


def export_experiment(folder: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "results.json", out / "results.json")
    scores, targets, labels = {}, None, None
    for path in sorted((folder / "attacks").glob("*-scores.npy")):
        attack = path.name.removesuffix("-scores.npy")
        found, found_labels, values = scored_targets(folder, attack)
        if targets is None:
            targets, labels = found, found_labels
        elif not (found == targets).all():
            raise ValueError(f"{folder.name}: attacks scored different targets")
        if len(values) != len(found):
            raise ValueError(f"{folder.name}: {attack} has {len(values)} scores for "
                             f"{len(found)} targets")
        scores[attack] = [float(v) for v in values]
    if targets is None:
        raise ValueError(f"{folder.name}: no attack scores under {folder / 'attacks'}")
    (out / SCORES_FILE).write_text(json.dumps(
        {"targets": targets.tolist(), "labels": labels.tolist(), "scores": scores}) + "\n")


def export_campaign(run_dir: Path, out: Path) -> list[str]:
    done = [p for p in sorted(run_dir.iterdir()) if (p / "results.json").exists()]
    if not done:
        raise ValueError(f"no finished experiment under {run_dir}")
    for folder in done:
        export_experiment(folder, out / folder.name)
    campaign = yaml.safe_load((run_dir / "campaign.yaml").read_text())["campaign"]
    shutil.copyfile(run_dir / "campaign.yaml", out / f"{campaign}.yaml")
    return [p.name for p in done]


if __name__ == "__main__":
    print(", ".join(export_campaign(Path(sys.argv[1]), Path(sys.argv[2]))))
