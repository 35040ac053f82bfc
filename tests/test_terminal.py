"""What the command line prints fits 80 columns: the results table (rich, at the terminal's
width; results.md keeps the Markdown), `--help` without a line broken before it had to be, and
`fedattack list`."""

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.terminal import fill, print_campaign, print_results

ATTACKS = ("whitebox", "blackbox", "threshold-loss", "rmia-offline")


def quickstart_rows() -> list[dict]:
    """Rows as results.json has them for the quickstart (the figures made up)."""
    rows = []
    for k, attack in enumerate(ATTACKS):
        auc = 0.65 + 0.03 * k
        rows.append({
            "experiment": "quickstart", "attacker": "local", "mode": "passive",
            "victim": "all", "knowledge": "reference" if attack.startswith("rmia") else
            "supervised", "attack": attack, "attack_accuracy": auc - 0.05,
            "attack_accuracy_ci": [auc - 0.08, auc - 0.02], "auc": auc,
            "auc_ci": [auc - 0.034, auc + 0.033], "tpr_at_0.1pct_fpr": None,
            "tpr_at_0.1pct_fpr_ci": None, "min_resolvable_fpr": 0.01,
            "tpr_at_1pct_fpr": 0.02 * (k + 1), "tpr_at_1pct_fpr_ci": [0.01 * k, 0.03 * (k + 1)],
            "target_train_accuracy": 0.953, "target_test_accuracy": 0.671})
    return rows


def render(rows: list[dict], width: int, **kwargs) -> list[str]:
    out = io.StringIO()
    print_results(Console(file=out, width=width), rows, **kwargs)
    return out.getvalue().splitlines()


def intervals(row: dict) -> list[str]:
    return [f"[{lo:.3f}, {hi:.3f}]" for key in ("attack_accuracy", "auc", "tpr_at_1pct_fpr")
            for lo, hi in [row[f"{key}_ci"]]]


def test_the_results_table_fits_80_columns_and_shows_every_figure_with_its_interval():
    rows = quickstart_rows()
    lines = render(rows, 80)
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    text = "\n".join(lines)
    assert "…" not in text
    # what every row shares is said once, above the table; the knowledge differs: a column
    shared = lines[0] + " " + lines[1]
    assert "experiment quickstart" in shared and "model acc members 0.953" in shared
    assert "knowledge" not in shared and "knowledge" in text
    starts = [line.split()[0] for line in lines if line.split()]
    for row in rows:
        assert row["attack"] in starts
        for interval in intervals(row):
            assert interval in text, interval  # each interval whole, on the line under its figure
        assert f"{row['auc']:.3f}" in text
    assert text.count("n/a (<5/500)") == len(rows)
    assert "[a, b]: 95% interval" in text and "n/a (<5/n)" in text


def test_on_a_wide_terminal_each_row_is_one_line():
    rows = quickstart_rows()
    lines = render(rows, 200)
    for row in rows:
        (line,) = [x for x in lines if x.startswith(row["attack"] + " ")]
        assert all(interval in line for interval in intervals(row))


def test_a_run_ends_with_the_table_at_the_terminals_width(monkeypatch, capsys):
    from fedattack.cli import report_run
    from fedattack.config import Experiment

    record = {"history": [{"train_accuracy": 0.953, "test_accuracy": 0.671}]}
    rows = quickstart_rows()
    rows[0].update(undertrained=True, val_auc=0.702, threshold_loss_val_auc=0.707)
    for columns in (80, 200):
        monkeypatch.setenv("COLUMNS", str(columns))
        report_run(Experiment(name="quickstart"), Path("runs/quickstart"), record, rows)
        printed = capsys.readouterr()
        lines = printed.out.splitlines()
        warning = printed.err.splitlines()
        assert warning[0].startswith("warning: quickstart whitebox (all): undertrained")
        assert len(warning) == 1  # not a terminal: whole, for whatever reads it
        assert lines[0].startswith("quickstart: target model train accuracy 0.953")
        assert all(len(line.rstrip()) <= columns for line in lines)
        assert not any(line.startswith("|") for line in lines)  # no Markdown
        whitebox = [line for line in lines if line.startswith("whitebox")]
        assert ("[0.616, 0.683]" in whitebox[0]) == (columns > 80)


def test_a_campaign_prints_its_rows_and_the_spread_over_seeds():
    rows = quickstart_rows()
    spread = [{"experiment": "quickstart", "attack": "whitebox", "victim": "all",
               "seeds": [0, 1, 2], "auc": {"mean": 0.7, "std": 0.01, "min": 0.69, "max": 0.71}}]
    out = io.StringIO()
    print_campaign(Console(file=out, width=80), rows, spread)
    text = out.getvalue()
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    assert "0.700 ± 0.010" in text and "[0.690, 0.710]" in text and "seeds 0,1,2" in text
    assert "mean ± sample standard deviation [min, max] over the seeds" in text


def test_fill_never_breaks_an_item():
    items = ["experiment quickstart", "attacker local", "model acc non-members 0.671"]
    assert fill(items, 40) == ["experiment quickstart; attacker local",
                               "model acc non-members 0.671"]
    assert fill(["x" * 50], 40) == ["x" * 50]


def fedattack(*args: str) -> str:
    """What `fedattack ARGS` prints on a terminal 80 columns wide."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    return result.stdout


def needless_breaks(text: str, width: int = 80) -> list[str]:
    """Lines broken before the next word had to go on a new line: a line of prose that ends
    without punctuation, followed by a continuation (starting lower-case, at the same column)
    whose first word would have fitted at its end."""
    found = []
    lines = [line.rstrip().rstrip("│").rstrip() for line in text.splitlines()]
    for line, after in zip(lines, lines[1:], strict=False):
        stripped = after.lstrip(" │")
        if not stripped or not line.strip(" │") or not stripped[0].islower():
            continue
        if line.endswith((".", ":", ";", ",")) and not line.endswith(","):
            continue
        word = stripped.split()[0]
        if len(line) + 1 + len(word) <= width - 3:  # the panel's border and padding
            found.append(f"{line!r} / {after.strip()!r}")
    return found


@pytest.mark.parametrize("command", ["", "run", "validate", "download", "deploy-local", "clean",
                                     "list"])
def test_help_fits_80_columns_without_needless_breaks(command):
    text = fedattack(*([command] if command else []), "--help")
    assert all(len(line) <= 80 for line in text.splitlines())
    assert needless_breaks(text) == []


def test_needless_breaks_are_found():
    needed = ("│ Check an experiment or a campaign file without running it: its keys and     │\n"
              "│ values, then its dataset's files.                                           │")
    assert needless_breaks(needed) == []
    broken = "Trains the target model, and prints the\nresults (kept in the run directory)."
    assert len(needless_breaks(broken)) == 1


def test_list_names_what_an_experiment_can_use_in_80_columns():
    from fedattack.attack_registry import names
    from fedattack.catalogue import DEFENCES
    from fedattack.config import STRATEGY_PARAMETERS
    from fedattack.data import dataset_names
    from fedattack.models import model_names

    text = fedattack("list")
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines())
    words = set(re.findall(r"[\w.+-]+", text))
    for name in [*dataset_names(), *model_names(), *names(), "gan", *STRATEGY_PARAMETERS]:
        assert name in words, name
    for name, key, _ in DEFENCES:
        assert f"{name}  {key}:" in re.sub(r" {2,}", "  ", text), name


def test_each_section_and_defence_is_named_by_a_key_of_the_experiment():
    from fedattack.catalogue import DEFENCES, catalogue
    from fedattack.config import Experiment

    keys = [s.key for s in catalogue() if s.key] + [key for _, key, _ in DEFENCES]
    assert len(keys) == 4 + len(DEFENCES)
    for key in keys:
        model = Experiment
        for part in key.split("."):
            assert model is not None and part in model.model_fields, key
            annotation = model.model_fields[part].annotation
            model = next((a for a in getattr(annotation, "__args__", (annotation,))
                          if hasattr(a, "model_fields")), None)
