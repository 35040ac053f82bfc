"""The progress display of a run: one line that fits 80 columns, names the phase, and estimates
the time left.

A run goes through phases (starting Ray, the federation's rounds or the target's epochs,
features, the attack network's epochs, reference models). Each phase is one rich task: its label
names the phase, the bar and ``k/n`` say where it stands, elapsed and remaining time follow, then
a short detail (e.g. the round's test accuracy or the attack's validation AUC) that is cut first
when the terminal is narrow. A phase ends when the next one starts or the display closes: one
with a count stays as a finished row (``done``, or ``stopped`` short of its count, e.g. the attack
network stopping early), one without (feature extraction: no count, a moving bar) disappears.
Nothing is shown when the display is off (``--quiet``, or output that is not a terminal and no
console given).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

LABEL_WIDTH = 16  # the phase: "round", "attack epoch", "features", "reference models"
BAR_WIDTH = 10


class CountColumn(ProgressColumn):
    """``k/n``; blank for a phase without a count (its bar moves to and fro)."""

    def render(self, task) -> Text:
        if task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}", style="progress.download")


class RemainingColumn(ProgressColumn):
    """``eta 0:01:23`` from rich's speed estimate, ``eta -`` until there is one; ``done`` once
    the phase has run its count, ``stopped`` when it ended short of it."""

    def render(self, task) -> Text:
        remaining = task.time_remaining
        if task.finished:
            return Text("done", style="progress.remaining")
        if task.fields.get("ended"):
            return Text("stopped", style="progress.remaining")
        if remaining is None:
            return Text("eta -", style="progress.remaining")
        minutes, seconds = divmod(int(round(remaining)), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"eta {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


def _fixed(width: int) -> Column:
    return Column(width=width, no_wrap=True)


def _label(text: str) -> str:
    return text if len(text) <= LABEL_WIDTH else text[:LABEL_WIDTH - 1] + "…"


class RunProgress:
    """Phases of one run on one console; ``phase()`` starts one, ``advance()`` moves it."""

    def __init__(self, name: str, console: Console | None = None, show: bool = True,
                 clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.show = show
        self.console = console or Console(stderr=True)
        self.clock = clock  # rich's (time.monotonic) unless given
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> RunProgress:
        if self.show:
            columns = (
                TextColumn("{task.fields[label]}", table_column=_fixed(LABEL_WIDTH)),
                CountColumn(table_column=_fixed(7)),
                BarColumn(bar_width=BAR_WIDTH, table_column=_fixed(BAR_WIDTH)),
                TimeElapsedColumn(table_column=_fixed(8)),
                RemainingColumn(table_column=_fixed(12)),
                TextColumn("{task.description}",
                           table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)))
            # expand: the line spans the terminal and the detail (ratio 1) takes what the fixed
            # columns leave; unexpanded, a long detail would squeeze them all instead
            # speed_estimate_period: the eta averages the steps of the last hour (rich's
            # default, 30 s, has no step to average when an epoch takes longer: "eta -")
            self._progress = Progress(*columns, console=self.console, transient=False,
                                      expand=True, speed_estimate_period=3600,
                                      get_time=self.clock)
            self._progress.__enter__()
            self.console.print(f"{self.name}:")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._end_phase()
            self._progress.__exit__(*exc)
            self._progress = None

    def phase(self, what: str, total: int | None, detail: str = "") -> None:
        """Start a phase: ``what`` names it (``round``, ``attack epoch``, ``features``); `total`
        is its count (None: no count, e.g. feature extraction)."""
        if self._progress is None:
            return
        self._end_phase()
        self._task = self._progress.add_task(detail, total=total,
                                             label=_label(what))

    def _end_phase(self) -> None:
        """The current phase's row: kept, frozen (done or stopped), when it has a count; removed
        when it has none."""
        if self._task is None:
            return
        task = next(t for t in self._progress.tasks if t.id == self._task)
        if task.total is None:
            self._progress.remove_task(self._task)
        else:
            self._progress.stop_task(self._task)
            self._progress.update(self._task, ended=True)
        self._task = None

    def advance(self, detail: str = "", steps: int = 1) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, advance=steps, description=detail)

    def note(self, detail: str) -> None:
        """Change the current phase's detail without moving it."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=detail)


_ACTIVE: ContextVar[RunProgress | None] = ContextVar("fedattack_progress", default=None)
_OFF = RunProgress("", show=False)


def active() -> RunProgress:
    """The display of the run in progress, for code far below the runner (the attack network's
    epochs, feature extraction); a display that shows nothing when there is none."""
    return _ACTIVE.get() or _OFF


@contextmanager
def run_progress(name: str, show: bool, console: Console | None = None):
    with RunProgress(name, console, show) as progress:
        token = _ACTIVE.set(progress)
        try:
            yield progress
        finally:
            _ACTIVE.reset(token)
