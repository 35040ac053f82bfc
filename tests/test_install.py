"""The install as documented resolves torch's CPU build and no CUDA package (issue 28).

On Linux, PyPI's torch is the CUDA build with 2-3 GB of nvidia-* packages; the CPU build comes
from PyTorch's CPU index. Each documented command is resolved by pip in a fresh venv
(`--dry-run --report`, nothing installed) and the report is read: torch must carry the `+cpu`
label and no nvidia-* package may be in it. Where the CPU index cannot be reached (the project's
build machines), pip's configuration supplies the same CPU wheel from local disk; without
either, the resolution picks the CUDA build and this test fails, as the install would.

The resolutions are slow (pip reads ~100 packages, minutes): `make test` leaves them out,
.ci/run runs them.
"""

import json
import shlex
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.system_tools import needs

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The README's command for pip users, run from a clone.
PIP_COMMAND = ["install", "-c", "constraints.txt", "--extra-index-url", CPU_INDEX, "."]


def fresh_pip(folder: Path) -> list[str]:
    venv.create(folder, with_pip=True)
    return [str(folder / "bin" / "python"), "-m", "pip"]


def resolved(pip: list[str], args: list[str], report: Path) -> dict[str, str]:
    """{name: version} of what `pip <args>` would install, read from pip's report.

    `--retries 0`: an index that cannot be reached is given up at once (pip's 5 retries cost
    ~8 s per package on a machine without PyTorch's index); what resolves does not change."""
    done = subprocess.run([*pip, *args, "--dry-run", "--quiet", "--retries", "0", "--report",
                           str(report)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


def assert_cpu_only(packages: dict[str, str]) -> None:
    assert packages["torch"].endswith("+cpu"), packages["torch"]
    assert not [name for name in packages if name.startswith("nvidia")], sorted(packages)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_pip_users_command_resolves_the_cpu_build_and_no_cuda_package(tmp_path):
    packages = resolved(fresh_pip(tmp_path / "venv"), PIP_COMMAND, tmp_path / "report.json")
    assert "fedattack" in packages and "flwr" in packages
    assert_cpu_only(packages)
    pinned = constraints()
    assert packages["torch"] == pinned["torch"] + "+cpu"
    assert packages["flwr"] == pinned["flwr"]


def makefile_pip_commands(venv_dir: Path) -> list[list[str]]:
    """The pip commands `make install` runs into the venv `venv_dir`, as make prints them."""
    done = subprocess.run(["make", "-n", "-B", "install", f"VENV={venv_dir}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    return [shlex.split(line)[1:] for line in done.stdout.splitlines()
            if line.startswith(f"{venv_dir}/bin/python -m pip install")]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@needs("make")
def test_make_installs_torch_alone_from_the_cpu_index_then_all_under_the_constraints(tmp_path):
    commands = makefile_pip_commands(tmp_path / "venv")
    assert commands and all(c[c.index("-c") + 1] == "constraints.txt" for c in commands)
    torch_step = commands[0]
    assert torch_step[-1] == "torch" and "--no-deps" in torch_step
    assert torch_step[torch_step.index("--index-url") + 1] == CPU_INDEX
    packages = resolved(fresh_pip(tmp_path / "venv"), torch_step[2:], tmp_path / "report.json")
    assert list(packages) == ["torch"]
    assert_cpu_only(packages)


def constraints() -> dict[str, str]:
    """{name: version} of constraints.txt."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {canonicalize_name(name): version for name, version in
            (line.split("==") for line in lines if line and not line.startswith("#"))}


def test_the_constrained_versions_are_inside_pyprojects_ranges():
    """What CI installs (constraints.txt) is what pyproject admits: every dependency is pinned,
    inside its range (torch's between the oldest opacus accepts and the release tested)."""
    pinned = constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for line in project["dependencies"] + [line for group in extras.values() for line in group]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):
            continue  # an extra naming another (dev = [..., "fedattack[data]"]): the project itself
        assert name in pinned, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name]), (line, pinned[name])
