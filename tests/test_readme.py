"""Every command the README and the docs site show (their fenced bash/console blocks) runs in a
test. The cheap ones run here, as written, in a sandbox folder with the repository's venv, its
experiments and a copy of the committed quickstart run at the paths the pages name. The
expensive ones (an install, `make run`, a deployment, a paper's campaign) are those a test run by
.ci/run runs, which is checked here command by command; a command the pages show and no test
runs fails `test_every_command_is_run_by_a_test`.

`make run` itself is run by the slow test below (minutes on two cores, run by .ci/run): the
results table it writes has the columns and the rows (attacks) of the README's table, so the
worked example describes what a newcomer sees."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
QUICKSTART = DOCS / "results" / "quickstart"
CI = (REPO / ".ci" / "run").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def commands(text: str) -> list[str]:
    """The commands of the bash/console blocks, comments and prompts stripped."""
    out = []
    for block in re.findall(r"```(?:bash|sh|console|shell)\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", "", block)  # continuation lines joined
        for line in block.splitlines():
            line = re.split(r"\s#", " " + line, maxsplit=1)[0].strip().removeprefix("$ ")
            if line:
                out.append(line)
    return out


def pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def shown() -> dict[str, list[Path]]:
    """Every command shown, and the pages that show it."""
    found: dict[str, list[Path]] = {}
    for page in pages():
        for command in commands(page.read_text()):
            found.setdefault(command, []).append(page)
    return found


def in_test(path: str, *needles: str) -> bool:
    text = (REPO / path).read_text()
    return all(needle in text for needle in needles)


def ci_runs(test: str) -> bool:
    return re.search(rf"pytest[^\n]*{re.escape(test)}", CI) is not None


# Commands run here as written (see `sandbox`).
CHEAP = {
    "python3 -m venv .venv",
    ".venv/bin/fedattack list",
    ".venv/bin/fedattack validate experiments/quickstart.yaml",
    ".venv/bin/fedattack report runs/quickstart",
    ".venv/bin/fedattack clean runs/quickstart --dry-run",
    ".venv/bin/fedattack clean runs/quickstart",
}


def expensive() -> dict[str, bool]:
    """Command -> whether a test .ci/run runs runs it (checked against that test's source)."""
    return {
        "make install": "test: $(STAMP)" in MAKEFILE and "$(STAMP): pyproject.toml" in MAKEFILE
                        and re.search(r"^make test$", CI, re.M) is not None,
        "make run": ci_runs("tests/test_readme.py") and "test_make_run_prints" in
                    (REPO / "tests" / "test_readme.py").read_text(),
        "make test": re.search(r"^make test$", CI, re.M) is not None,
        # the pip users' install: resolved (dry run) by tests/test_install.py
        ".venv/bin/pip install -c constraints.txt --extra-index-url "
        "https://download.pytorch.org/whl/cpu .":
            in_test("tests/test_install.py", '"install", "-c", "constraints.txt", '
                    '"--extra-index-url", CPU_INDEX, "."') and ci_runs("tests/test_install.py"),
        ".venv/bin/mkdocs build --strict":
            in_test("tests/test_docs.py", '"build", "--strict"') and ci_runs_make_test(),
        # `make run` is this command with RUN_DIR=runs/quickstart
        ".venv/bin/fedattack run experiments/quickstart.yaml --out runs/quickstart":
            "fedattack run experiments/quickstart.yaml --out $(RUN_DIR)" in MAKEFILE
            and "RUN_DIR ?= runs/quickstart" in MAKEFILE,
        # the local deployment, with and without SuperNode authentication
        ".venv/bin/fedattack deploy-local experiments/quickstart.yaml --out "
        "runs/quickstart-deployed":
            in_test("tests/test_deploy_local.py", '"deploy-local"') and
            ci_runs("tests/test_deploy_local.py"),
        # --auth: the deployment with SuperNode authentication the flag asks for, tested on its
        # own (an unregistered SuperNode refused)
        ".venv/bin/fedattack deploy-local experiments/quickstart.yaml --out runs/qs-auth --auth":
            in_test("tests/test_deploy_local.py", "auth=True") and
            in_test("fedattack/cli.py", "auth=auth") and ci_runs("tests/test_deploy_local.py"),
        # `flwr run .` on Flower's local SuperLink
        "source .venv/bin/activate": ci_runs("tests/test_flwr_run.py"),
        "export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1":
            in_test("tests/test_flwr_run.py", "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"),
        "flwr run . --federation-config num-supernodes=4":
            in_test("tests/test_flwr_run.py", '"run", ".", "--federation-config", '
                    '"num-supernodes=4"') and ci_runs("tests/test_flwr_run.py"),
        "flwr ls --run-id N --format json":
            in_test("tests/test_flwr_run.py", '"ls", "--run-id", run_id, "--format", "json"'),
        # the deployment in containers: docker/compose-run.sh, which `make compose-run` runs,
        # submits the run the same way (its SuperLink connection is named `compose`)
        "make compose-run": "bash docker/compose-run.sh" in MAKEFILE
                            and in_test("tests/test_compose_run.py", "compose-run.sh")
                            and ci_runs("tests/test_compose_run.py"),
        "flwr run . fedattack --run-config 'config-path=\"/app/experiments/quickstart.yaml\" "
        "run-dir=\"/app/runs/quickstart\"'":
            in_test("docker/compose-run.sh", "flwr run . compose --run-config")
            and ci_runs("tests/test_compose_run.py"),
        # your own Flower app (docs/own-flower-app.md): examples/flower-app under `flwr run .`
        # in simulation, then attacked (tests/test_flower_app.py)
        "cd examples/flower-app": in_test("tests/test_flower_app.py", '"flower-app"')
                                  and ci_runs("tests/test_flower_app.py"),
        "flwr run . --federation-config num-supernodes=4 --run-config "
        "'fedattack-config=\"'$PWD'/audit.yaml\" "
        "fedattack-run-dir=\"'$PWD'/runs/flower-app\"'":
            in_test("tests/test_flower_app.py", '"run", ".", "--federation-config", '
                    '"num-supernodes=4"', '"--run-config", run_config',
                    'fedattack-config="{audit}" fedattack-run-dir="{run_dir}"')
            and ci_runs("tests/test_flower_app.py"),
        "fedattack attack runs/flower-app":
            in_test("tests/test_flower_app.py", '"attack", str(run_dir)')
            and ci_runs("tests/test_flower_app.py"),
        "flwr ls fedattack --format json":
            in_test("docker/compose-run.sh", "flwr ls compose", "--format json")
            and ci_runs("tests/test_compose_run.py"),
    }


def ci_runs_make_test() -> bool:
    return re.search(r"^make test$", CI, re.M) is not None


# Commands no test runs in full, and what is checked of them instead.
NOT_RUN = {
    # a paper's campaign: hours; the file is validated (test_commands_not_run_are_checked)
    ".venv/bin/fedattack run experiments/table3-layer-outputs.yaml": "validated",
    # downloads 170 MB from the dataset's own site
    ".venv/bin/fedattack download cifar10": "a known dataset with a download URL",
}


def test_every_command_is_run_by_a_test():
    runs = expensive()
    unknown = {c: [str(p.relative_to(REPO)) for p in where] for c, where in shown().items()
               if c not in CHEAP and c not in runs and c not in NOT_RUN}
    assert unknown == {}, "commands the pages show that no test runs"
    assert [c for c, ok in runs.items() if c in shown() and not ok] == []


def test_the_readme_shows_install_the_two_commands_and_the_report():
    shown_here = commands(README.read_text())
    assert shown_here[:4] == [
        "make install", "python3 -m venv .venv",
        ".venv/bin/pip install -c constraints.txt --extra-index-url "
        "https://download.pytorch.org/whl/cpu .",
        "make run"]
    assert "make test" in shown_here
    assert ".venv/bin/fedattack report runs/quickstart" in shown_here


def test_commands_not_run_are_checked():
    from fedattack.config import load_yaml, parse_experiment
    from fedattack.data import dataset_names

    for command in NOT_RUN:
        words = command.split()
        if words[1] == "run":
            path = REPO / words[2]
            loaded = load_yaml(path)
            assert loaded is not None
            done = subprocess.run([sys.executable, "-m", "fedattack.cli", "validate",
                                   "--no-data", str(path)], cwd=REPO, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr
        elif words[1] == "download":
            assert words[2] in dataset_names()
    assert parse_experiment  # imported: the campaign file parses through the same schema


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder where the commands run as written: .venv (this interpreter's venv),
    experiments/, docs/results/quickstart/ and runs/quickstart/ (copies of the committed run)."""
    folder = tmp_path_factory.mktemp("sandbox")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / "experiments").symlink_to(REPO / "experiments")
    for where in (folder / "docs" / "results" / "quickstart", folder / "runs" / "quickstart"):
        shutil.copytree(QUICKSTART, where)
    return folder


@pytest.mark.parametrize("command", sorted(CHEAP))
def test_cheap_commands_run_as_written(command, sandbox):
    env = {**os.environ, "COLUMNS": "100"}
    cwd = sandbox
    if command.startswith("python3 -m venv"):
        cwd = sandbox / "fresh"
        cwd.mkdir(exist_ok=True)
    done = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    if " report " in command:
        assert (cwd / command.split()[-1] / "report.html").is_file()
    if command.startswith("python3 -m venv"):
        assert (cwd / ".venv" / "bin" / "python").exists()


def first_table(text: str) -> list[list[str]]:
    """The cells of the first markdown table in a plain code block of `text`."""
    block = re.search(r"```\n(\|.*?)```", text, flags=re.S).group(1)
    return [[c.strip() for c in row.strip().strip("|").split("|")]
            for row in block.strip().splitlines() if not row.startswith("|---")]


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
    readme = first_table(README.read_text())
    assert written[0] == readme[0], "the README's example table has other columns"
    attack = readme[0].index("attack")
    assert [row[attack] for row in written[1:]] == [row[attack] for row in readme[1:]]
    printed = [line.split()[0] for line in done.stdout.splitlines() if line.split()]
    assert all(row[attack] in printed for row in readme[1:])
    for name in ("results.json", "results.md", "figures/roc.png", "run.json", "report.html",
                 "records-at-risk.csv", "provenance.json"):
        assert (run_dir / name).is_file(), name
