"""The progress display fits 80 columns, names its phases and estimates the time left."""

import io

from rich.console import Console

from fedattack.progress import RunProgress


def render(width: int = 80) -> list[str]:
    """The display a run leaves: every round, features (no count), an attack network stopping
    early (3 of at most 100 epochs)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False, color_system=None)
    with RunProgress("quickstart", console) as progress:
        progress.phase("round", 20, "starting Ray")
        for k in range(20):
            progress.advance(f"test acc 0.{600 + k}")
        progress.phase("features", None, "whitebox-targets, 1000 records")
        progress.phase("attack epoch", 100)
        for _ in range(3):
            progress.advance("val AUC 0.671" + LONG)
    return buf.getvalue().splitlines()


LONG = ", a detail too long for the line, which is cut before anything else is"


def final_rows(lines: list[str]) -> list[str]:
    """The rows of the display's last frame (the lines after the last `quickstart:`)."""
    return lines[len(lines) - lines[::-1].index("quickstart:"):]


def test_lines_fit_80_columns_and_name_each_phase():
    lines = render(80)
    assert lines[0] == "quickstart:"
    assert all(len(line) <= 80 for line in lines), lines
    round_line, epoch_line = final_rows(lines)
    assert round_line.startswith("round") and epoch_line.startswith("attack epoch")
    assert "20/20" in round_line and "test acc 0.619" in round_line
    assert "3/100" in epoch_line and "val AUC 0.671" in epoch_line
    assert epoch_line.endswith("…") and "stopped" in epoch_line  # the detail is cut, not the rest


def test_phases_end_done_or_stopped_and_the_one_without_count_disappears():
    round_line, epoch_line = final_rows(render(80))
    assert "done" in round_line.split() and "eta" not in round_line.split()
    assert "stopped" in epoch_line.split() and "eta" not in epoch_line.split()  # stopped early
    assert not any("features" in line or "?" in line for line in final_rows(render(80)))


def test_a_phase_without_count_shows_no_count_while_it_runs():
    frame = io.StringIO()
    console = Console(file=io.StringIO(), width=80, force_terminal=False, color_system=None)
    with RunProgress("quickstart", console) as progress:
        progress.phase("features", None, "whitebox-targets, 1000 records")
        Console(file=frame, width=80).print(progress._progress.get_renderable())
    (running,) = frame.getvalue().splitlines()
    assert running.startswith("features") and "whitebox-targets" in running
    assert "0/" not in running and "?" not in running


def test_the_time_left_is_estimated_when_each_step_takes_minutes():
    now = [0.0]
    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=False, color_system=None)
    with RunProgress("quickstart", console, clock=lambda: now[0]) as progress:
        progress.phase("whitebox epoch", 10)
        for _ in range(3):
            now[0] += 90.0  # an epoch every minute and a half
            progress.advance()
        frame = io.StringIO()
        Console(file=frame, width=80).print(progress._progress.get_renderable())
    assert "eta 0:10:30" in frame.getvalue()  # 7 epochs left


def test_elapsed_and_remaining_time_are_shown_whole():
    for line in final_rows(render(80)):
        fields = line.split()
        assert any(f.count(":") == 2 and "…" not in f for f in fields), line  # 0:00:00
        assert "eta" in fields or "done" in fields or "stopped" in fields, line
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
