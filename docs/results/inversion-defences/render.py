"""Render the inversion-defences campaign's table and figures from its result files.

    python docs/results/inversion-defences/render.py [RESULTS_JSON] [OUT_DIR]

RESULTS_JSON: the campaign's results.json (default: results.json beside this script, copied from
runs/inversion-defences/results.json); OUT_DIR: where table.md, defences.png and client-dp.png
go (default: beside this script). Only the rows of the reconstruction attack are read.

Intervals, 95% over the reconstructed records of a cell: PSNR and SSIM the percentile bootstrap
the stage computed (a single record's is its one value: a cell of one record says nothing about
the spread); the label accuracy, identification and recovery rates Clopper-Pearson (exact) from
their counts, recomputed here (the stage's own are Wilson).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from scipy.stats import beta  # noqa: E402

HERE = Path(__file__).resolve().parent
RATES = (("label_accuracy", "labels"), ("identification_rate", "identified"),
         ("success_rate", "recovered"))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    alpha = 1 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def cell(row: dict) -> str:
    """The campaign entry a row's experiment was expanded from (its name, no sweep here)."""
    return row["experiment"]


def noise_of(row: dict) -> float | None:
    name = cell(row)
    if name.startswith("client-dp-") and name.endswith(".aggregate"):
        return float(name.removeprefix("client-dp-").removesuffix(".aggregate"))
    return None


def load(path: Path) -> list[dict]:
    rows = [r for r in json.loads(path.read_text()) if "n_candidates" in r]
    for r in rows:
        n = r["n_records"]
        for key, _ in RATES:
            k = round(r[key] * n)
            r[f"{key}_k"] = k
            r[f"{key}_cp"] = clopper_pearson(k, n)
    return rows


def fmt_interval(value: float | None, ci, digits: str) -> str:
    if value is None:
        return "–"
    text = f"{value:{digits}}"
    if ci:
        text += f" [{ci[0]:{digits}}, {ci[1]:{digits}}]"
    return text


def epsilon_text(eps: float | None, row: dict | None = None) -> str:
    """The accountant's epsilon; infinite (written null) for client-level DP without noise."""
    if eps is None:
        return "∞" if row is not None and noise_of(row) == 0 else "–"
    return "∞" if eps == float("inf") or eps > 1e300 else f"{eps:.3g}"


def table(rows: list[dict]) -> str:
    head = ["cell", "defence", "observed", "victim", "records", "PSNR (dB)", "SSIM", "labels",
            "identified", "recovered", "epsilon", "global test acc.", "attack time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        rates = [f"{r[f'{k}_k']}/{r['n_records']} [{r[f'{k}_cp'][0]:.2f}, "
                 f"{r[f'{k}_cp'][1]:.2f}]" for k, _ in RATES]
        accuracy = r.get("global_test_accuracy")
        values = [cell(r), r.get("defence", ""),
                  "aggregate" if "aggregate" in r["observed"] else "upload", r["victim"],
                  str(r["n_records"]), fmt_interval(r["psnr"], r.get("psnr_ci"), ".1f"),
                  fmt_interval(r["ssim"], r.get("ssim_ci"), ".3f"), *rates,
                  epsilon_text(r.get("epsilon"), r),
                  "–" if accuracy is None else f"{accuracy:.3f}", f"{r['attack_time_s']:.0f}"]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def pooled(rows: list[dict]) -> str:
    """Per cell, its victims' records together: the counts and their Clopper-Pearson intervals,
    and the record-weighted mean PSNR with the range of the victims' means."""
    head = ["cell", "defence", "records", "mean PSNR (dB) [victims' range]", "labels",
            "identified", "recovered", "epsilon"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(cell(r) for r in rows):
        group = [r for r in rows if cell(r) == name]
        n = sum(r["n_records"] for r in group)
        psnr = sum(r["psnr"] * r["n_records"] for r in group) / n
        spread = (f" [{min(r['psnr'] for r in group):.1f}, {max(r['psnr'] for r in group):.1f}]"
                  if len(group) > 1 else "")
        rates = []
        for key, _ in RATES:
            k = sum(r[f"{key}_k"] for r in group)
            low, high = clopper_pearson(k, n)
            rates.append(f"{k}/{n} [{low:.2f}, {high:.2f}]")
        lines.append("| " + " | ".join([name, group[0].get("defence", ""), str(n),
                                         f"{psnr:.1f}{spread}", *rates,
                                         epsilon_text(group[0].get("epsilon"), group[0])])
                     + " |")
    return "\n".join(lines) + "\n"


def errorbar(ax, x, y, ci, **kw):
    low, high = ci if ci else (y, y)
    ax.errorbar(x, y, yerr=[[max(0.0, y - low)], [max(0.0, high - y)]], capsize=3, **kw)


def plot_defences(rows: list[dict], path: Path) -> None:
    """PSNR (bootstrap interval) and the recovery rate (Clopper-Pearson) per cell and victim."""
    labels = [f"{cell(r)} ({r['victim'].split(' ')[0]}, n={r['n_records']})" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.42 * len(rows) + 1.6), sharey=True)
    for i, r in enumerate(rows):
        colour = "tab:red" if "aggregate" in r["observed"] else "tab:blue"
        errorbar(left, r["psnr"], i, None, fmt="o", color=colour)
        low, high = r.get("psnr_ci") or (r["psnr"], r["psnr"])
        left.plot([low, high], [i, i], color=colour, lw=2)
        k, n = r["success_rate_k"], r["n_records"]
        cp = r["success_rate_cp"]
        right.plot([cp[0], cp[1]], [i, i], color=colour, lw=2)
        right.plot(k / n, i, "o", color=colour)
    left.set_yticks(range(len(rows)), labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("PSNR (dB), 95% bootstrap interval over the records")
    right.set_xlabel("records recovered (identified, beating every trivial image),\n"
                     "95% Clopper-Pearson interval")
    right.set_xlim(-0.02, 1.02)
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Inverting Gradients by the aggregator on MNIST, one FedSGD round of the CNN "
                 "(blue: the victim's upload; red: an aggregate)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_client_dp(rows: list[dict], path: Path) -> None:
    """PSNR and recovery of the released aggregate against client-level DP's noise multiplier,
    the accountant's epsilon (one round, every participant sampled) above each point."""
    sweep = sorted((r for r in rows if noise_of(r) is not None), key=noise_of)
    if not sweep:
        return
    floor = min(z for z in map(noise_of, sweep) if z > 0) / 3 if any(noise_of(r) for r in sweep) \
        else 1e-4
    xs = [noise_of(r) or floor for r in sweep]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
    for x, r in zip(xs, sweep, strict=True):
        errorbar(top, x, r["psnr"], r.get("psnr_ci"), fmt="o", color="tab:red")
        top.annotate(f"ε={epsilon_text(r.get('epsilon'), r)}", (x, r["psnr"]),
                     textcoords="offset points", xytext=(4, 6), fontsize=7)
        cp = r["success_rate_cp"]
        errorbar(bottom, x, r["success_rate"], cp, fmt="s", color="tab:red")
    none = [r for r in rows if cell(r) == "none"]
    if none:
        top.axhline(sum(r["psnr"] for r in none) / len(none), ls="--", color="grey",
                    label="no defence, the upload (mean of the victims)")
        top.legend(fontsize=7, loc="lower left")
    top.set_xscale("log")
    top.set_ylim(top=top.get_ylim()[1] + 2.5)  # room for the epsilon labels
    top.set_ylabel("PSNR (dB), 95% bootstrap\n(one record: its value)")
    bottom.set_ylabel("recovered, 95%\nClopper-Pearson")
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_xlabel(f"client-level DP noise multiplier z (noise z x clip on one\n"
                      f"participant's clipped update; z=0 drawn at {floor:.0e})", fontsize=9)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle("The released aggregate under client-level DP: reconstruction vs noise",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else HERE / "results.json"
    if source.is_dir():
        source = source / "results.json"
    out = Path(argv[2]) if len(argv) > 2 else HERE
    rows = load(source)
    if not rows:
        raise SystemExit(f"{source}: no reconstruction rows")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(
        "Per cell, the victims' records pooled (95% Clopper-Pearson intervals over the "
        "records):\n\n" + pooled(rows) + "\nPer victim (PSNR and SSIM: 95% bootstrap "
        "intervals over the victim's records, a single record's being its value; rates: 95% "
        "Clopper-Pearson):\n\n" + table(rows))
    plot_defences(rows, out / "defences.png")
    plot_client_dp(rows, out / "client-dp.png")
    print(f"{len(rows)} rows: {out / 'table.md'}, {out / 'defences.png'}, "
          f"{out / 'client-dp.png'}")


if __name__ == "__main__":
    main(sys.argv)
