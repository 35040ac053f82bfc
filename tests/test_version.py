"""`fedattack --version` (issue 11)."""

import subprocess
import sys
from importlib.metadata import version

import fedattack


def test_version_prints_the_package_flower_and_torch_versions():
    done = subprocess.run([sys.executable, "-m", "fedattack.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"fedattack {fedattack.__version__} "
                                   f"(flwr {version('flwr')}, torch {version('torch')})")
    assert fedattack.__version__ == version("fedattack")  # pyproject.toml agrees
