"""Provenance of a run: which fedattack (version and git commit), which Flower, torch and
Python, on which machine. Written beside results.json at the end of a run (provenance.json), so
that a report written later states the run's, not the reporting machine's."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PROVENANCE_JSON = "provenance.json"
PACKAGES = ("flwr", "torch", "numpy", "opacus")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def git_commit(source: Path | None = None) -> str:
    """The commit of the checkout fedattack is imported from (``+dirty`` when it has changes
    that are not committed), or ``unknown`` outside a git checkout (an installed wheel)."""
    source = source or Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def current(device: str | None = None) -> dict[str, Any]:
    """This process's provenance: versions, commit, Python and the machine."""
    from fedattack import __version__

    return {
        "fedattack": __version__,
        "git_commit": git_commit(),
        **{name: package_version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "device": device,
        "machine": f"{platform.node()} ({platform.system()} {platform.release()}, "
                   f"{platform.machine()}, {os.cpu_count()} CPUs)",
    }
