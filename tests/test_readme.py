"""The README's first two sections (what it is and the two commands; reading a result) are run as
written: `make run` here (slow: it trains and attacks the quickstart federation, minutes on two
cores, run by .ci/run), `make test` by CI itself. The results table `make run` prints has the
columns and the rows (attacks) of the README's example table, so the worked example describes
what a newcomer sees."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def first_sections(count: int = 2) -> str:
    """The README up to its `count`+1-th second-level heading (the title's section counts)."""
    text = README.read_text()
    headings = [m.start() for m in re.finditer(r"^## ", text, flags=re.M)]
    return text[: headings[count - 1]] if len(headings) >= count else text


def commands(text: str) -> list[str]:
    """The commands of the bash blocks, comments stripped."""
    out = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip().removeprefix("$ ")
            if line:
                out.append(line)
    return out


def example_table(text: str) -> list[list[str]]:
    """The cells of the first markdown table in a plain code block of `text`."""
    block = re.search(r"```\n(\|.*?)```", text, flags=re.S).group(1)
    return [[c.strip() for c in row.strip().strip("|").split("|")]
            for row in block.strip().splitlines() if not row.startswith("|---")]


def test_the_first_sections_show_exactly_the_two_commands_and_ci_runs_make_test():
    assert commands(first_sections()) == ["make run", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M), ".ci/run must call the README's make test"


@pytest.mark.slow
def test_make_run_prints_the_table_the_readme_explains(tmp_path):
    run_dir = tmp_path / "quickstart"
    done = subprocess.run(["make", "run", f"RUN_DIR={run_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    # the terminal gets a rich table; results.md the Markdown one the README shows
    written = [[c.strip() for c in line.strip().strip("|").split("|")]
               for line in (run_dir / "results.md").read_text().splitlines()
               if line.startswith("| ") and not line.startswith("|---")]
    readme = example_table(first_sections())
    assert written[0] == readme[0], "the README's example table has other columns"
    attack = readme[0].index("attack")
    assert [row[attack] for row in written[1:]] == [row[attack] for row in readme[1:]]
    printed = [line.split()[0] for line in done.stdout.splitlines() if line.split()]
    assert all(row[attack] in printed for row in readme[1:])
    for name in ("results.json", "results.md", "figures/roc.png", "run.json"):
        assert (run_dir / name).is_file(), name
