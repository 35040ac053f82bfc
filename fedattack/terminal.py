"""The results as `fedattack run` prints them: rich tables at the terminal's width.

results.md keeps every column of every row in Markdown; on the terminal, what all rows share
(the experiment, the attacker, the target model's accuracies...) is said once above the table,
and where a row would not fit the terminal each figure's 95% interval goes on a line under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from fedattack.reporting import TABLE_COLUMNS, format_cell

Column = tuple[str, str, str]  # (key, title, format), as fedattack.reporting's COLUMNS
Cell = Callable[[dict, str, str], str]

# Columns that describe a row rather than measure the attack: said once when all rows agree.
CONTEXT_KEYS = frozenset({"experiment", "attacker", "mode", "victim", "knowledge", "features",
                          "seeds", "target_train_accuracy", "target_test_accuracy"})
LABEL_KEYS = CONTEXT_KEYS - {"target_train_accuracy", "target_test_accuracy"} | {"attack"}
MISSING = "–"  # format_cell's cell where a row has no value


def split_shared(records: Sequence[dict], columns: Sequence[Column],
                 cell: Cell) -> tuple[list[str], list[Column]]:
    """("title value" of each context column whose cell is the same in every row, the columns
    left for the table). A column no row has a value in is left out."""
    shared, left = [], []
    for column in columns:
        key, title, fmt = column
        values = {cell(r, key, fmt) for r in records}
        if values == {MISSING}:
            continue
        if key in CONTEXT_KEYS and len(values) == 1:
            shared.append(f"{title} {values.pop()}")
        else:
            left.append(column)
    return shared, left


def _table(records: Sequence[dict], columns: Sequence[Column], cell: Cell,
           stacked: bool) -> Table:
    """One line per row, the labels first (the attack, then whatever else tells the rows apart);
    `stacked`: the labels in one column, one under the other, and each figure's interval under
    it."""
    labels = sorted((c for c in columns if c[0] in LABEL_KEYS), key=lambda c: c[0] != "attack")
    figures = [c for c in columns if c not in labels]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    label_columns = [labels] if stacked else [[c] for c in labels]
    for group in label_columns:
        table.add_column("\n".join(title for _, title, _ in group), overflow="fold")
    for _, title, _ in figures:
        table.add_column(title, justify="right", overflow="fold")
    for r in records:
        cells = ["\n".join(cell(r, key, fmt) for key, _, fmt in group) for group in label_columns]
        for key, _, fmt in figures:
            text = cell(r, key, fmt)
            cells.append(text.replace(" [", "\n[", 1) if stacked else text)
        table.add_row(*(Text(c) for c in cells))  # Text: a "[...]" is no markup
    return table


def results_table(records: Sequence[dict], width: int,
                  columns: Sequence[Column] = TABLE_COLUMNS,
                  cell: Cell = format_cell) -> tuple[list[str], Table]:
    """The shared "title value" items and the table of the rest: one line per row where that
    fits in `width` columns, else stacked (see _table)."""
    shared, left = split_shared(records, columns, cell)
    table = _table(records, left, cell, stacked=False)
    unbounded = Console(width=10_000)
    if Measurement.get(unbounded, unbounded.options, table).maximum > width:
        table = _table(records, left, cell, stacked=True)
    return shared, table


def fill(items: Sequence[str], width: int, separator: str = "; ") -> list[str]:
    """`items` joined by `separator` into lines of at most `width` characters, never breaking
    an item (one longer than `width` gets a line of its own)."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(separator) + len(item) <= width:
            lines[-1] += separator + item
        else:
            lines.append(item)
    return lines


INTERVAL = "[a, b]: 95% interval"
UNRESOLVED = "n/a (<5/n): an FPR under 5/n, n the non-members, which is not resolvable"


def legend(table: Table, *, brackets: str = INTERVAL) -> list[str]:
    """What the table's notations mean, for those it uses."""
    cells = [str(c) for column in table.columns for c in column.cells]
    return [note for mark, note in (("[", brackets), ("n/a (<5/", UNRESOLVED))
            if any(mark in c for c in cells)]


def print_results(console: Console, records: Sequence[dict],
                  columns: Sequence[Column] = TABLE_COLUMNS, cell: Cell = format_cell,
                  brackets: str = INTERVAL) -> None:
    """The results table at the console's width: first what every row shares, last what its
    notations mean (`brackets`: what a figure's bracketed pair is)."""
    shared, table = results_table(records, console.width, columns, cell)
    for line in fill(shared, console.width):
        console.print(Text(line), overflow="fold")
    console.print(table)
    for line in legend(table, brackets=brackets):
        console.print(Text(line, style="dim"))


def print_run(console: Console, results: list[dict]) -> None:
    """One run's results: its attacks' rows, or the GAN attack's."""
    from fedattack.results import is_reconstruction

    if any(r.get("attack") == "gan" for r in results):
        from fedattack.reconstruction import GAN_COLUMNS

        print_results(console, results, GAN_COLUMNS)
        return
    inversion = [r for r in results if is_reconstruction(r)]
    membership = [r for r in results if not is_reconstruction(r)]
    if membership:
        print_results(console, membership)
    if inversion:
        from fedattack.inversion.stage import RUN_COLUMNS

        print_results(console, inversion, RUN_COLUMNS)


def print_campaign(console: Console, records: list[dict], spread: list[dict]) -> None:
    """A campaign's results as results.md has them (campaign.campaign_markdown): the attack
    rows, the GAN rows, the experiments flagged for their cost to the global model, the mean
    and spread over seeds."""
    from fedattack.campaign import (
        CAMPAIGN_COLUMNS,
        INVERSION_COLUMNS,
        SPREAD_COLUMNS,
        flagged_lines,
        spread_cell,
    )
    from fedattack.reconstruction import GAN_COLUMNS
    from fedattack.results import is_reconstruction

    inversion = [r for r in records if is_reconstruction(r)]
    membership = [r for r in records if r.get("attack") != "gan" and not is_reconstruction(r)]
    gan = [r for r in records if r.get("attack") == "gan"]
    if membership:
        print_results(console, membership, CAMPAIGN_COLUMNS)
    if inversion:
        print_results(console, inversion, INVERSION_COLUMNS)
    if gan:
        print_results(console, gan, GAN_COLUMNS)
    flags = flagged_lines(records)
    if flags:
        console.print("\nFlagged: active attacks that cost the global model more than their "
                      "passive twin (participants would notice):", highlight=False)
        for line in flags:
            console.print(line, highlight=False)
    if spread:
        console.print("\nOver seeds:", highlight=False)
        print_results(console, spread, SPREAD_COLUMNS, spread_cell,
                      brackets="mean ± sample standard deviation [min, max] over the seeds")
