"""The progress display fits 80 columns, names its phases and estimates the time left."""

import io

from rich.console import Console

from fedattack.progress import RunProgress


def render(width: int = 80) -> list[str]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    with RunProgress("quickstart", console) as progress:
        progress.phase("round", 20, "starting Ray")
        for k in range(5):
            progress.advance(f"test acc 0.{600 + k}")
        progress.phase("attack epoch", 100)
        for _ in range(3):
            progress.advance("val AUC 0.671")
    return buf.getvalue().splitlines()


def test_lines_fit_80_columns_and_name_each_phase():
    lines = render(80)
    assert lines[0] == "quickstart:"
    assert all(len(line) <= 80 for line in lines), lines
    round_line = next(line for line in lines if line.startswith("round"))
    epoch_line = next(line for line in lines if line.startswith("attack epoch"))
    assert "5/20" in round_line and "test acc 0.604" in round_line
    assert "3/100" in epoch_line and "val AUC 0.671" in epoch_line


def test_elapsed_and_remaining_time_are_shown_whole():
    for line in render(80)[1:]:
        fields = line.split()
        assert any(f.count(":") == 2 and "…" not in f for f in fields), line  # 0:00:00
        assert "eta" in fields or "done" in fields, line
        if "eta" in fields:
            estimate = fields[fields.index("eta") + 1]
            assert estimate == "-" or estimate.count(":") == 2, line


def test_no_display_when_off():
    buf = io.StringIO()
    with RunProgress("x", Console(file=buf, width=80), show=False) as progress:
        progress.phase("round", 3)
        progress.advance("test acc 0.5")
    assert buf.getvalue() == ""


def test_code_below_the_runner_reaches_the_active_display():
    from fedattack.progress import active, run_progress

    assert active().show is False  # outside a run: a display that shows nothing
    active().phase("features", None)  # and accepts calls
    buf = io.StringIO()
    with run_progress("quickstart", True, Console(file=buf, width=80)):
        active().phase("whitebox epoch", 60)
        active().advance("val AUC 0.655")
    assert active().show is False
    assert any(line.startswith("whitebox epoch") and "1/60" in line and "val AUC 0.655" in line
               for line in buf.getvalue().splitlines())
