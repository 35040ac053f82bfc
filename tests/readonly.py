"""Running `fedattack` with a folder made read-only for real, whoever runs the tests.

A user's `chmod a-w` stops no one who runs as root (CI and these machines do), so as root the
folder is bind-mounted read-only in a mount namespace of the command's own (``unshare``): the
command sees EROFS, nothing outside it is affected, and the mount goes with the command. As any
other user, the folder's write permissions are taken away for the command and given back after.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _take_write_permissions(folder: Path) -> dict[Path, int]:
    """Clear every write bit under `folder`; return the modes to give back."""
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if not p.is_symlink()}
    for path, mode in modes.items():
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return modes


def fedattack_read_only(folder: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`fedattack ARGS` in `cwd` with `folder` read-only; its exit code and output."""
    command = [sys.executable, "-m", "fedattack.cli", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if os.geteuid() != 0:
        modes = _take_write_permissions(folder)
        try:
            return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=600)
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare(1): a read-only folder cannot be made")
    mount = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    done = subprocess.run(["unshare", "--mount", "sh", "-c", mount, str(folder), *command],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if "mount:" in done.stderr or "unshare:" in done.stderr:
        pytest.skip(f"a read-only bind mount is not allowed here: {done.stderr.strip()}")
    return done
