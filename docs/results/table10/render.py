"""Table X on real Fashion-MNIST before and after the active attackers ascend their known records,
with paired intervals, from the exported result files of this folder.

    python docs/results/table10/render.py [FOLDER]   # default: this script's folder

reads FOLDER/{before,after}/<experiment>/{results.json,scores.json} (written by export.py) and
writes FOLDER/table.md and FOLDER/paired.json:

- every row: AUC with the run's own 95% bootstrap interval, its flags (inverted: the interval lies
  below 0.5), and the global model's final test accuracy with its drop against the passive twin;
- paired differences on the same targets (paired.py's stratified paired bootstrap, 2,000
  resamples): each active experiment minus its passive twin, the same attack, before and after;
  an ascending isolating attacker minus the isolating one; and after minus before for the same
  experiment and attack (the same seed gives the same targets; checked, not assumed).

An AUC recomputed from scores.json must equal results.json's, so the two files cannot drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired import paired_difference  # noqa: E402

from fedattack.metrics import auc  # noqa: E402

PHASES = ("before", "after")
ORDER = ("global-passive", "global-gradient-ascent", "global-isolating",
         "global-isolating-gradient-ascent", "local-passive", "local-gradient-ascent",
         "global-gradient-ascent-absolute", "global-isolating-gradient-ascent-absolute")
AUC_TOLERANCE = 1e-3  # results.json keeps 4-6 digits


def twins(name: str) -> list[str]:
    """What an experiment is compared with, as paired.py compares it (an `-absolute` variant,
    the paper's literal ascent step, as the experiment it varies)."""
    if name.endswith("passive"):
        return []
    found = ["local-passive" if name.startswith("local") else "global-passive"]
    stem = name.removesuffix("-absolute").removesuffix("-gradient-ascent")
    if stem != name.removesuffix("-absolute") and stem in ORDER and not stem.endswith("passive"):
        found.append(stem)
    return found


def load_phase(folder: Path) -> dict[str, dict]:
    """experiment -> {"rows": {attack: row}, "targets", "labels", "scores": {attack: array}}."""
    found = {}
    for exp_dir in sorted(p for p in folder.iterdir() if (p / "results.json").exists()):
        rows = {r["attack"]: r for r in json.loads((exp_dir / "results.json").read_text())}
        saved = json.loads((exp_dir / "scores.json").read_text())
        labels = np.asarray(saved["labels"], dtype=int)
        scores = {a: np.asarray(v, dtype=float) for a, v in saved["scores"].items()}
        for attack, values in scores.items():
            recomputed = auc(labels, values)
            if abs(recomputed - rows[attack]["auc"]) > AUC_TOLERANCE:
                raise ValueError(f"{exp_dir}: {attack} AUC {recomputed:.4f} from scores.json, "
                                 f"{rows[attack]['auc']} in results.json")
        found[exp_dir.name] = {"rows": rows, "targets": np.asarray(saved["targets"]),
                               "labels": labels, "scores": scores}
    return found


def pair(a: dict, b: dict, attack: str) -> dict | None:
    """AUC(a) - AUC(b) for `attack` on the same targets, or None when either lacks it."""
    if attack not in a["scores"] or attack not in b["scores"]:
        return None
    if not np.array_equal(a["targets"], b["targets"]):
        raise ValueError("the two rows were scored on different targets")
    return paired_difference(a["labels"], a["scores"][attack], b["scores"][attack])


def fmt_ci(value: float, ci) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def fmt_diff(d: dict | None) -> str:
    if d is None:
        return "–"
    low, high = d["ci"]
    sign = " (>0)" if low > 0 else " (<0)" if high < 0 else ""
    return f"{d['difference']:+.3f} [{low:+.3f}, {high:+.3f}]{sign}"


def flags(row: dict) -> str:
    return ", ".join(f for f in ("inverted", "undertrained") if row.get(f))


def render(folder: Path) -> tuple[str, list[dict]]:
    phases = {p: load_phase(folder / p) for p in PHASES if (folder / p).is_dir()}
    names = [n for n in ORDER if any(n in ph for ph in phases.values())]
    attacks = sorted({a for ph in phases.values() for e in ph.values() for a in e["rows"]})
    lines = ["## AUC per row (95% bootstrap interval of the row)", "",
             "| experiment | attack | " + " | ".join(f"AUC {p} | flags {p}" for p in phases)
             + " |", "|---|---|" + "---|---|" * len(phases)]
    for name in names:
        for attack in attacks:
            cells = []
            for phase in phases.values():
                row = phase.get(name, {"rows": {}})["rows"].get(attack)
                cells += [fmt_ci(row["auc"], row["auc_ci"]), flags(row)] if row else ["–", ""]
            if any(c != "–" for c in cells[::2]):
                lines.append(f"| {name} | {attack} | " + " | ".join(cells) + " |")
    lines += ["", "## Global model's final test accuracy (drop against the passive twin)", "",
              "| experiment | " + " | ".join(phases) + " |", "|---|" + "---|" * len(phases)]
    for name in names:
        cells = []
        for phase in phases.values():
            if name not in phase:
                cells.append("–")
                continue
            acc = next(iter(phase[name]["rows"].values()))["global_test_accuracy"]
            twin = ("local-passive" if name.startswith("local") else "global-passive")
            base = phase.get(twin)
            drop = "" if base is None or twin == name else (
                f" ({acc - next(iter(base['rows'].values()))['global_test_accuracy']:+.3f})")
            cells.append(f"{acc:.3f}{drop}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    paired = []
    for phase_name, phase in phases.items():
        for name in names:
            for other in twins(name):
                if name in phase and other in phase:
                    for attack in attacks:
                        d = pair(phase[name], phase[other], attack)
                        if d:
                            paired.append({"phase": phase_name, "experiment": name,
                                           "against": other, "attack": attack, **d})
    if set(PHASES) <= set(phases):
        for name in names:
            if name in phases["before"] and name in phases["after"]:
                for attack in attacks:
                    d = pair(phases["after"][name], phases["before"][name], attack)
                    if d:
                        paired.append({"phase": "after-minus-before", "experiment": name,
                                       "against": f"{name} (before)", "attack": attack, **d})
    lines += ["", "## Paired AUC differences on the same targets (95% paired bootstrap "
              "interval; (>0) / (<0): the interval excludes 0)", "",
              "| experiment | against | attack | " + " | ".join(phases) + " |",
              "|---|---|---|" + "---|" * len(phases)]
    keyed = {(d["phase"], d["experiment"], d["against"], d["attack"]): d for d in paired}
    seen = []
    for d in paired:
        key = (d["experiment"], d["against"], d["attack"])
        if d["phase"] in PHASES and key not in seen:
            seen.append(key)
            cells = [fmt_diff(keyed.get((p, *key))) for p in phases]
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    after_before = [d for d in paired if d["phase"] == "after-minus-before"]
    if after_before:
        lines += ["", "## After minus before, the same experiment and attack (paired)", "",
                  "| experiment | attack | AUC after - before |", "|---|---|---|"]
        lines += [f"| {d['experiment']} | {d['attack']} | {fmt_diff(d)} |"
                  for d in after_before]
    return "\n".join(lines) + "\n", paired


def main(folder: Path) -> None:
    table, paired = render(folder)
    (folder / "table.md").write_text(table)
    (folder / "paired.json").write_text(json.dumps(paired, indent=1) + "\n")
    print(table)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
