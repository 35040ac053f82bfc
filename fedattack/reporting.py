"""results.json, results.md and figures of membership inference runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedattack.audit import summary_lines
from fedattack.io import write_atomic
from fedattack.results import ResultRow, write_rows, written

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
FIGURES = "figures"

COLUMNS = {  # every column a results table can show: key -> (key, title, format)
    key: (key, title, fmt) for key, title, fmt in (
        ("experiment", "experiment", "{}"),
        ("partition", "data", "{}"),
        ("defence", "defence", "{}"),
        ("attacker", "attacker", "{}"),
        ("mode", "mode", "{}"),
        ("victim", "victim", "{}"),
        ("knowledge", "knowledge", "{}"),
        ("attack", "attack", "{}"),
        ("features", "features", "{}"),
        ("seeds", "seeds", "{}"),
        ("attack_accuracy", "accuracy", "{:.3f}"),
        ("paper_attack_accuracy", "paper", "{:.3f}"),
        ("auc", "AUC", "{:.3f}"),
        ("tpr_at_0.1pct_fpr", "TPR@0.1%FPR", "{:.3f}"),
        ("tpr_at_1pct_fpr", "TPR@1%FPR", "{:.3f}"),
        ("target_train_accuracy", "model acc members", "{:.3f}"),
        ("target_test_accuracy", "model acc non-members", "{:.3f}"),
        ("global_test_accuracy_drop", "drop vs passive", "{:.3f}"),
        ("epsilon", "epsilon (accountant)", "{:.2f}"),
        ("epsilon_lower_bound", "epsilon lower bound (audit)", "{:.2f}"),
        ("global_test_accuracy", "global test acc", "{:.3f}"),
        ("held_out.auc", "AUC (report half)", "{:.3f}"),
        ("held_out.tpr_at_1pct_fpr", "TPR@1%FPR (report half)", "{:.3f}"),
        ("flags", "flags", "{}"),
    )
}


def columns(*keys: str) -> tuple[tuple[str, str, str], ...]:
    """The (key, title, format) triples of `keys`, in that order, for `markdown_table`."""
    return tuple(COLUMNS[key] for key in keys)


TABLE_COLUMNS = columns("experiment", "attacker", "mode", "victim", "knowledge", "attack",
                        "attack_accuracy", "auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr",
                        "target_train_accuracy", "target_test_accuracy")


UNRESOLVED_FPR = {"tpr_at_0.1pct_fpr": 0.001, "tpr_at_1pct_fpr": 0.01}
UTILITY_DROP_FLAG = 0.05  # an active attack costing the global model more is flagged


def flags_text(record) -> str:
    """A row's flags in words: a learnt attack below the loss threshold on its held-out known
    records (undertrained), an AUC interval entirely below 0.5 (inverted), and, in a mean, the
    inverted victims' rows it averages."""
    flags = [name for name in ("undertrained", "inverted") if record.get(name)]
    victims = record.get("inverted_victims")
    if victims:
        flags.append(f"averages {len(victims)} inverted row(s): {', '.join(victims)}")
    return "; ".join(flags)


def format_cell(record, key: str, fmt: str) -> str:
    """A formatted value with its 95% interval where the record has one (`0.682 [0.650,
    0.714]`); `n/a (<5/n)` for a TPR at an FPR the record's n non-members cannot resolve; a dash
    where the record has no value (e.g. no paper figure). A dotted key (`held_out.auc`) reads a
    record the row holds."""
    if key == "flags":
        return flags_text(record)
    if "." in key and key not in record:
        head, leaf = key.split(".", 1)
        return format_cell(record.get(head) or {}, leaf, fmt)
    value = record.get(key)
    if value is None:
        smallest = record.get("min_resolvable_fpr")
        if key in UNRESOLVED_FPR and smallest:  # 5 / n, n the non-members of one evaluation
            return f"n/a (<5/{round(5 / smallest)})"
        return "–"
    text = fmt.format(value)
    interval = record.get(f"{key}_ci")
    if isinstance(interval, list | tuple) and len(interval) == 2:
        text += f" [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"
    if key == "global_test_accuracy_drop" and record.get("utility_flag"):
        text += f" (>{UTILITY_DROP_FLAG * 100:.0f} pts)"
    return text


def with_flags(records: Sequence, columns: Sequence[tuple]) -> tuple[tuple, ...]:
    """`columns`, and the flags column where a record has a flag."""
    if any(flags_text(r) for r in records) and COLUMNS["flags"] not in columns:
        return (*columns, COLUMNS["flags"])
    return tuple(columns)


def markdown_table(records: Sequence, columns: Sequence[tuple] = TABLE_COLUMNS) -> str:
    """One row per (experiment, attack); `columns` are (key, title, format) triples."""
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    rows = ["| " + " | ".join(format_cell(r, key, fmt) for key, _, fmt in columns) + " |"
            for r in records]
    return "\n".join([head, rule, *rows]) + "\n"


def write_results(out_dir: str | Path, records: Sequence[ResultRow | dict],
                  columns: Sequence[tuple] = TABLE_COLUMNS) -> None:
    """results.json (result rows as fedattack.results writes them; the GAN attack's records as
    they are) and results.md: the table, its flags and any DP audit's line."""
    out_dir = Path(out_dir)
    write_rows(out_dir / RESULTS_JSON, records)
    write_atomic(out_dir / RESULTS_MD, results_markdown(records, columns))


def results_markdown(records: Sequence[ResultRow | dict],
                     columns: Sequence[tuple] = TABLE_COLUMNS) -> str:
    """results.md of `records`: the table, its flags and any DP audit's line."""
    records = written(records)  # the tables show what results.json holds
    columns = with_flags(records, columns)
    audited = any(r.get("epsilon_lower_bound") is not None for r in records)  # under DP
    if audited:
        columns = (*columns, *(COLUMNS[k] for k in ("epsilon", "epsilon_lower_bound")
                               if COLUMNS[k] not in columns))
    lines = strongest_lines(records) + (summary_lines(records) if audited else [])
    return markdown_table(records, columns) + "".join(f"\n{line}\n" for line in lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(curves: dict[str, dict], path: str | Path, title: str) -> None:
    """ROC of every attack, on linear axes and on log-log axes (where low FPRs are visible).

    The legend gives each attack's AUC with its interval where the curve carries them (`auc`,
    `auc_ci`); the log axes start at the smallest FPR the evaluation resolves
    (`min_resolvable_fpr`, 5 / n_nonmembers), below which the curve says nothing."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for name, c in curves.items():
        label = name
        if c.get("auc") is not None:
            label += f" (AUC {c['auc']:.3f}"
            if c.get("auc_ci") is not None:
                label += f" [{c['auc_ci'][0]:.3f}, {c['auc_ci'][1]:.3f}]"
            label += ")"
        for ax in axes:
            ax.plot(c["fpr"], c["tpr"], label=label)
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].set(xlabel="false positive rate", ylabel="true positive rate", title="linear")
    resolved = [c["min_resolvable_fpr"] for c in curves.values() if "min_resolvable_fpr" in c]
    floor = max(resolved) if resolved else 1e-4
    axes[1].plot([floor, 1], [floor, 1], "k:", lw=0.8)
    axes[1].set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1),
                xlabel="false positive rate", ylabel="true positive rate",
                title=f"log-log, from the smallest resolvable FPR ({floor:.2g})")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_member_histograms(values: np.ndarray, labels: np.ndarray, path: str | Path,
                           xlabel: str, title: str, log_x: bool = False) -> None:
    """Distributions of a per-record value for members and non-members (Figs. 4 and 5)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    values = np.asarray(values, dtype=float)
    if log_x:
        values = np.log10(np.maximum(values, 1e-12))
        xlabel = f"log10 {xlabel}"
    bins = np.histogram_bin_edges(values, bins=40)
    for flag, name in ((1, "members"), (0, "non-members")):
        ax.hist(values[labels == flag], bins=bins, alpha=0.55, label=name, density=True)
    ax.set(xlabel=xlabel, ylabel="density", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_per_class(per_class: dict[int, float], path: str | Path, title: str,
                   counts: dict[int, int] | None = None) -> None:
    """Attack accuracy per class of the target records (Fig. 2), with the number of targets of
    each class (on a second axis) when ``counts`` is given: a class of 3 targets says little."""
    plt = _pyplot()
    classes = sorted(per_class)
    fig, ax = plt.subplots(figsize=(max(6, len(classes) * 0.08), 3.8))
    ax.bar(range(len(classes)), [per_class[c] for c in classes], width=0.9)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set(xlabel="class", ylabel="attack accuracy", ylim=(0, 1), title=title)
    if counts:
        n = [counts.get(c, 0) for c in classes]
        twin = ax.twinx()
        twin.plot(range(len(classes)), n, color="0.3", marker="_", ls="none", ms=8, mew=2)
        twin.set(ylabel="targets in the class", ylim=(0, max(n) * 1.15 or 1))
        ax.set_title(f"{title} ({min(n)}-{max(n)} targets per class)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_class_counts(counts: list[list[int]], path: str | Path, title: str) -> None:
    """Records of each class (columns) held by each participant (rows), as a heat map, with each
    participant's total: how skewed a non-IID partition is."""
    plt = _pyplot()
    grid = np.asarray(counts, dtype=float)
    # A row per participant up to a page's height: beyond it the rows share pixels (a
    # 1,000-participant map drawn 250 inches tall took a gigabyte to render)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, grid.shape[1] * 0.07 + 2)),
                                    min(12.0, max(2.5, grid.shape[0] * 0.25 + 1.2))))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set(xlabel="class", ylabel="participant", title=title)
    totals = grid.sum(axis=1).astype(int)
    if grid.shape[0] <= 40:
        ax.set_yticks(range(grid.shape[0]), [f"{p} ({n})" for p, n in enumerate(totals)])
    fig.colorbar(image, ax=ax, label="records")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_norms_over_rounds(rounds: Sequence[str], norms: np.ndarray, labels: np.ndarray,
                           path: str | Path, title: str) -> None:
    """Gradient norm of member and non-member targets at each observed snapshot (Figs. 3, 7):
    the median and the interquartile band of each group."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    x = np.arange(len(rounds))
    for flag, name in ((1, "target members"), (0, "target non-members")):
        group = np.asarray(norms, dtype=float)[labels == flag]
        low, mid, high = np.percentile(group, [25, 50, 75], axis=0)
        ax.plot(x, mid, marker="o", label=name)
        ax.fill_between(x, low, high, alpha=0.2)
    ax.set(xticks=x, xlabel="observed snapshot", ylabel="target gradient norm (median, IQR)",
           yscale="log")
    ax.set_title(title, fontsize=9)
    ax.set_xticklabels(rounds, rotation=30, fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _grid(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] tiled into one (rows * H, columns * W, C) picture."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    tiles = np.ones((rows * columns, c, h, w), dtype=images.dtype)
    tiles[:n] = images
    tiles = tiles.reshape(rows, columns, c, h, w).transpose(0, 3, 1, 4, 2)
    return tiles.reshape(rows * h, columns * w, c)


def plot_sample_grid(generated: np.ndarray, real: np.ndarray, path: str | Path,
                     title: str, columns: int = 8) -> None:
    """Generated images beside real ones, each (N, C, H, W) in [0, 1] (the GAN attack)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, images, name in ((axes[0], generated, "generated"), (axes[1], real, "real victim")):
        grid = _grid(images, columns)
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
        ax.set(title=name, xticks=[], yticks=[])
    fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_series(entries: Sequence[dict], keys: Sequence[str], path: str | Path,
                title: str, ylim: tuple[float, float] | None = (0, 1),
                hline: float | None = None) -> None:
    """Values of `keys` against the entries' "round" (`ylim` None: fitted; `hline`: a dotted
    threshold)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    rounds = [e["round"] for e in entries]
    for key in keys:
        ax.plot(rounds, [e[key] for e in entries], marker="o", label=key)
    ax.set(xlabel="round", title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if hline is not None:
        ax.axhline(hline, color="k", ls=":", lw=0.8)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(training: dict, path: str | Path, title: str) -> None:
    """A learnt attack's training: train and validation loss (left), train and validation AUC
    with the loss threshold's validation AUC on the same held-out records (right), per epoch;
    the restored best epoch marked."""
    plt = _pyplot()
    history = training["history"]
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((left, "loss", "criterion"), (right, "auc", "AUC")):
        for split in ("train", "val"):
            key = f"{split}_{metric}"
            if any(key in h for h in history):
                ax.plot(epochs, [h.get(key, np.nan) for h in history], label=key)
        ax.axvline(training["best_epoch"], color="grey", linestyle=":", label="best epoch")
        ax.set(xlabel="epoch", ylabel=label)
    reference = training.get("threshold_loss_val_auc")
    if reference is not None:
        right.axhline(reference, color="black", linestyle="--",
                      label=f"loss threshold, val ({reference:.3f})")
    right.axhline(0.5, color="grey", linewidth=0.5)
    flag = " (undertrained)" if training.get("undertrained") else ""
    fig.suptitle(f"{title}{flag}")
    for ax in (left, right):
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def undertrained_warnings(records: Sequence[dict]) -> list[str]:
    """One line per learnt attack whose best validation AUC fell below the loss threshold's on
    the same held-out known records (results.json marks it ``undertrained``)."""
    return [f"warning: {r.get('experiment')} {r['attack']} ({r.get('victim')}): undertrained, "
            f"validation AUC {r['val_auc']:.3f} below the loss threshold's "
            f"{r['threshold_loss_val_auc']:.3f} on the same held-out known records"
            for r in records if r.get("undertrained") and r.get("val_auc") is not None]


def strongest_lines(records: Sequence) -> list[str]:
    """One line per experiment for results.md: its strongest attack, how it was chosen, and its
    figures on the targets the choice did not read."""
    lines = []
    for r in strongest_rows(records):
        held = r["held_out"]
        lines.append(
            f"Strongest attack of {r['experiment']}: {r['attack']} ({r['victim']}), chosen on "
            f"{r['strongest_chosen_on']}: AUC {format_cell(held, 'auc', '{:.3f}')}, TPR at 1% "
            f"FPR {format_cell(held, 'tpr_at_1pct_fpr', '{:.3f}')} on "
            f"{held['n_members']} + {held['n_nonmembers']} targets.")
    return lines


def strongest_rows(records: Sequence) -> list:
    """Per experiment, the row of its strongest attack (``strongest``: chosen on the selection
    half of the targets, see fedattack.results.mark_strongest); its figures are the report
    half's (``held_out``)."""
    return [r for r in records if r.get("strongest")]


PRIVACY_UTILITY_FIGURES = (("tpr_at_1pct_fpr", "TPR at 1% FPR"), ("auc", "AUC"))


def plot_privacy_utility(records: Sequence, path: str | Path) -> None:
    """What a defence buys: the strongest attack's TPR at 1% FPR (top, where the report half
    resolves it) and AUC (bottom), each with its 95% interval, on the report half of the
    targets (the attack chosen on the other half), against the global model's test accuracy;
    one point per defence, a panel per attacker, a marker per data partition."""
    rows = [r for r in strongest_rows(records) if r.get("global_test_accuracy") is not None]
    if not rows:
        return
    plt = _pyplot()
    attackers = list(dict.fromkeys(f"{r['attacker']} {r['mode']}" for r in rows))
    defences = list(dict.fromkeys(r.get("defence", "none") for r in rows))
    partitions = list(dict.fromkeys(r.get("partition", "") for r in rows))
    colours = plt.get_cmap("tab10")
    markers = "osD^v<>"
    fig, axes = plt.subplots(2, len(attackers), figsize=(4.2 * len(attackers), 7.6),
                             squeeze=False, sharey="row")
    for (key, name), panels in zip(PRIVACY_UTILITY_FIGURES, axes, strict=True):
        for ax, attacker in zip(panels, attackers, strict=True):
            for r in rows:
                held = r["held_out"]
                if f"{r['attacker']} {r['mode']}" != attacker or held.get(key) is None:
                    continue
                y, ci = held[key], held.get(f"{key}_ci")
                yerr = None if not ci else [[max(0.0, y - ci[0])], [max(0.0, ci[1] - y)]]
                ax.errorbar(r["global_test_accuracy"], y, yerr=yerr,
                            fmt=markers[partitions.index(r.get("partition", "")) % len(markers)],
                            color=colours(defences.index(r.get("defence", "none")) % 10),
                            capsize=3, markersize=7)
            ax.set_title(attacker)
            ax.set_xlabel("global model test accuracy")
            ax.grid(alpha=0.3)
        panels[0].set_ylabel(f"strongest attack's {name} (95% CI)")
    fig.suptitle("strongest attack chosen on one half of each victim's targets, its figures "
                 "from the other half", fontsize=9)
    handles = [plt.Line2D([], [], color=colours(i % 10), marker="o", ls="", label=d)
               for i, d in enumerate(defences)]
    handles += [plt.Line2D([], [], color="grey", marker=markers[i % len(markers)], ls="",
                           label=p) for i, p in enumerate(partitions)]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.05 + 0.02 * (len(handles) // 4), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
