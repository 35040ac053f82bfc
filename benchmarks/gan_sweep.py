"""The GAN attack's budget: federated rounds x generator steps a round, on MNIST and the faces.

A sweep campaign (experiments/hitaj-sweep-mnist.yaml, hitaj-sweep-faces.yaml) runs each
(generator steps, DP, seed) once, for the most rounds of the sweep. A federation's first R
rounds do not depend on how many rounds follow (nothing a round computes reads
`federation.rounds`; the same seed replays the same rounds), so a run of 80 rounds holds the
runs of 20 and 50: `table` reads each experiment's measured rounds and, for every R of
`--rounds`, reports what a campaign of R rounds would: the success over the window of its last
10 attacked rounds (share with its 95% Clopper-Pearson interval), the first successful round, all
successes, the model's test accuracy and epsilon at round R, and the seconds the federation took
to reach round R (run.json's history; the offline measure's time is not included).

    python benchmarks/gan_sweep.py table RUN_DIR [RUN_DIR ...] --rounds 20 50 80 \\
        --out docs/results/gan-sweep
    python benchmarks/gan_sweep.py samples LABEL=EXPERIMENT_DIR:ROUND [...] \\
        --out docs/results/gan-sweep/samples.png
    python benchmarks/gan_sweep.py success LABEL=EXPERIMENT_DIR:ROUND --out FIGURE.png

`table` writes sweep.json and sweep.csv (one row per experiment and R); `samples` draws the
samples the attacker recorded at the given rounds, one row of images each, with that round's
verdict and the window's share in the row's title; `success` draws an experiment's victim share
and relative distance over its rounds up to ROUND (as the measure's figures/gan/success.png).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedattack import reporting
from fedattack.config import Experiment, load_experiment
from fedattack.experiment import CONFIG_FILE, RUN_FILE, SNAPSHOT_DIR, experiment_dataset
from fedattack.io import read_json, write_json
from fedattack.reconstruction import (
    ROUNDS_FILE,
    plot_success,
    to_pixels,
    window_success,
    window_text,
)
from fedattack.snapshots import GENERATED_KIND, SnapshotStore, local_view

ROUNDS = (20, 50, 80)
TABLE_COLUMNS = (("dataset", "dataset", "{}"), ("dp", "DP", "{}"), ("seed", "seed", "{}"),
                 ("rounds", "rounds", "{}"), ("generator_steps", "steps", "{}"),
                 ("window_successes", "successes (last 10)", "{}"),
                 ("window_rounds", "of", "{}"), ("window_ci_low", "CI low", "{:.2f}"),
                 ("window_ci_high", "CI high", "{:.2f}"),
                 ("first_success_round", "first success", "{}"),
                 ("successes", "successes (all)", "{}"),
                 ("test_accuracy", "test acc", "{:.3f}"), ("time_s", "time (s)", "{:.0f}"))
SAMPLES_SHOWN = 16  # per experiment in the samples figure ...
SAMPLE_COLUMNS = 8  # ... in rows of this many
FIGURE_WIDTH = 5.5  # inches
CSV_COLUMNS = ("dataset", "dp", "noise_multiplier", "seed", "rounds", "generator_steps",
               "attacked_rounds", "generator_steps_total", "window_successes", "window_rounds",
               "window_success_share", "window_ci_low", "window_ci_high", "first_success_round",
               "successes", "test_accuracy", "epsilon", "time_s", "experiment")


def experiment_dirs(run_dirs: Sequence[Path]) -> list[Path]:
    """The measured GAN experiments under each run directory (a campaign's or an experiment's)."""
    found = {p.parent.parent for d in run_dirs for p in Path(d).glob(f"**/{ROUNDS_FILE}")}
    return sorted(found)


def budget_row(exp: Experiment, per_round: list[dict], history: dict[int, dict], rounds: int,
               name: str) -> dict:
    """What a campaign of `rounds` rounds would report, from the first rounds of a longer one."""
    seen = [r for r in per_round if r["round"] <= rounds]
    successes = [r["round"] for r in seen if r["success"]]
    window = window_success(seen)
    ci = window["window_success_share_ci"] or [None, None]
    return {
        "dataset": exp.data.dataset, "dp": exp.privacy is not None,
        "noise_multiplier": exp.privacy.noise_multiplier if exp.privacy else None,
        "seed": exp.seed, "rounds": rounds, "generator_steps": exp.gan.generator_steps,
        "attacked_rounds": len(seen), "generator_steps_total": len(seen) * exp.gan.generator_steps,
        "window_successes": window["window_successes"], "window_rounds": window["window_rounds"],
        "window_success_share": window["window_success_share"],
        "window_ci_low": ci[0], "window_ci_high": ci[1],
        "first_success_round": successes[0] if successes else None,
        "successes": len(successes),
        "test_accuracy": seen[-1]["target_test_accuracy"], "epsilon": seen[-1]["epsilon"],
        "time_s": history[rounds].get("elapsed_s"), "experiment": name,
    }


def experiment_rows(exp_dir: Path, rounds: Sequence[int]) -> list[dict]:
    """One row per R of `rounds` that the experiment reached (after its attack started)."""
    exp = load_experiment(exp_dir / CONFIG_FILE)
    per_round = read_json(exp_dir / ROUNDS_FILE)
    history = {h["round"]: h for h in read_json(exp_dir / RUN_FILE)["history"]}
    return [budget_row(exp, per_round, history, r, exp_dir.name) for r in rounds
            if exp.gan.start_round <= r <= per_round[-1]["round"]]


def write_table(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", rows)
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def samples_row(exp_dir: Path, server_round: int, shown: int) -> tuple[np.ndarray, str]:
    """The first `shown` samples the attacker recorded at `server_round` as [0, 1] images, and
    the round's verdict and window share."""
    exp = load_experiment(exp_dir / CONFIG_FILE)
    dataset = experiment_dataset(exp)
    view = SnapshotStore(exp_dir / SNAPSHOT_DIR).view(local_view(exp.gan.attacker))
    found = view.records(kind=GENERATED_KIND, round=server_round)
    if not found:
        raise ValueError(f"{exp_dir}: the attacker recorded no samples at round {server_round}")
    (record,) = found
    samples = view.read(record)["x"].float()[:shown]
    images = to_pixels(samples, dataset).view(-1, *dataset.input_shape).numpy()
    per_round = [r for r in read_json(exp_dir / ROUNDS_FILE) if r["round"] <= server_round]
    last = per_round[-1]
    return images, (f"round {server_round}: victim share {last['victim_share']:.2f}, relative "
                    f"distance {last['relative_distance']:.2f}, success {last['success']}; "
                    f"{window_text(window_success(per_round))}")

def plot_samples(rows: list[tuple[str, Path, int]], path: Path,
                 shown: int = SAMPLES_SHOWN) -> None:
    """One row of generated images per (label, experiment directory, round)."""
    plt = reporting._pyplot()
    drawn = [(label, *samples_row(d, r, shown)) for label, d, r in rows]
    grids = [reporting._grid(images, columns=SAMPLE_COLUMNS) for _, images, _ in drawn]
    heights = [g.shape[0] / g.shape[1] * FIGURE_WIDTH for g in grids]
    fig, axes = plt.subplots(len(drawn), 1, squeeze=False, gridspec_kw={"height_ratios": heights},
                             figsize=(FIGURE_WIDTH, sum(heights) + 0.35 * len(drawn)))
    for ax, (label, _, verdict), grid in zip(axes[:, 0], drawn, grids, strict=True):
        ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{label}\n{verdict}", fontsize=7)
        ax.set(xticks=[], yticks=[])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_sample(spec: str) -> tuple[str, Path, int]:
    """LABEL=EXPERIMENT_DIR:ROUND."""
    label, _, rest = spec.partition("=")
    where, _, server_round = rest.rpartition(":")
    if not label or not where or not server_round.isdigit():
        raise argparse.ArgumentTypeError(f"expected LABEL=EXPERIMENT_DIR:ROUND, got {spec!r}")
    return label, Path(where), int(server_round)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    table = commands.add_parser("table", help="the sweep's table from measured runs")
    table.add_argument("run_dirs", nargs="+", type=Path)
    table.add_argument("--rounds", nargs="+", type=int, default=list(ROUNDS))
    table.add_argument("--out", type=Path, required=True)
    samples = commands.add_parser("samples", help="a figure of generated samples")
    samples.add_argument("rows", nargs="+", type=parse_sample)
    samples.add_argument("--out", type=Path, required=True)
    success = commands.add_parser("success", help="success over rounds, up to a round")
    success.add_argument("run", type=parse_sample)
    success.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "table":
            table_command(args.run_dirs, args.rounds, args.out)
        elif args.command == "samples":
            plot_samples(args.rows, args.out)
        else:
            success_command(*args.run, args.out)
    except (OSError, ValueError) as e:  # a missing or malformed run: one line
        parser.exit(2, f"gan_sweep: {e}\n")


def table_command(run_dirs: Sequence[Path], rounds: Sequence[int], out: Path) -> None:
    dirs = experiment_dirs(run_dirs)
    if not dirs:
        raise ValueError(f"no measured GAN experiment under {', '.join(map(str, run_dirs))}")
    rows = [row for d in dirs for row in experiment_rows(d, rounds)]
    write_table(rows, out)
    print(reporting.markdown_table(rows, TABLE_COLUMNS))


def success_command(label: str, exp_dir: Path, last_round: int, out: Path) -> None:
    """The experiment's success figure (:func:`plot_success`) over its rounds up to
    `last_round`: what a campaign of that many rounds shows."""
    per_round = [r for r in read_json(exp_dir / ROUNDS_FILE) if r["round"] <= last_round]
    if not per_round:
        raise ValueError(f"{exp_dir}: no measured round up to {last_round}")
    plot_success(per_round, out, label)

if __name__ == "__main__":
    main()
