"""`fedattack clean`: remove the caches of finished runs, never their results.

A run directory's feature cache (``features/``) is most of its size (202 of the quickstart's
263 MB) and is rebuilt from the snapshots when needed; results, splits, snapshots and figures are
what a run is kept for. Only runs whose attack has finished (``results.json`` is there) are
cleaned, so an interrupted attack keeps the cache it resumes from. A run directory is recognised
by what only fedattack writes (the first line of its config.yaml), never by file names alone, so
a folder of the user's is never touched.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from fedattack.io import RUN_DIR_MARKER, remove_tree

CACHE_DIRS = ("features",)  # folders of a run directory that hold only derived, rebuildable data
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class Removed:
    path: Path
    bytes: int


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return total


def is_run_dir(folder: Path) -> bool:
    """Whether fedattack wrote `folder` as a run directory: its config.yaml (a file, not a link)
    opens with the line only fedattack writes there, and it holds a run.json. A folder of the
    user's that merely holds files of those names is not one."""
    config = folder / CONFIG_FILE
    if config.is_symlink() or not config.is_file() or not (folder / RUN_FILE).is_file():
        return False
    try:
        with config.open("rb") as fh:
            return fh.readline() == RUN_DIR_MARKER.encode()
    except OSError:
        return False


def run_dirs(root: Path) -> list[Path]:
    """``root`` itself if it is a run directory, else the run directories below it (a campaign)."""
    if is_run_dir(root):
        return [root]
    return sorted(p.parent for p in root.rglob(CONFIG_FILE)
                  if not p.parent.is_symlink() and is_run_dir(p.parent))


def clean_caches(root: str | Path, dry_run: bool = False) -> tuple[list[Removed], list[Path]]:
    """Remove the caches of every finished run under ``root``; return what was (or, with
    ``dry_run``, would be) removed and the runs skipped because their attack has not finished.
    Raises FileNotFoundError when ``root`` holds no run directory fedattack wrote, and
    PermissionError (naming the folder) when a cache to remove lies in a read-only folder,
    before anything of that run is removed."""
    root = Path(root)
    runs = run_dirs(root) if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(
            f"{root} holds no run directory that fedattack wrote (a folder whose {CONFIG_FILE} "
            f"opens with {RUN_DIR_MARKER.strip()!r}, beside a {RUN_FILE}); nothing removed")
    removed, skipped = [], []
    for run in runs:
        caches = [name for name in CACHE_DIRS
                  if (run / name).is_dir() and not (run / name).is_symlink()]
        if not caches:
            continue
        if not (run / RESULTS_FILE).is_file():
            skipped.append(run)
            continue
        if not dry_run and not os.access(run, os.W_OK):
            raise PermissionError(errno.EACCES, "the folder is read-only", str(run))
        for name in caches:
            removed.append(Removed(run / name, folder_bytes(run / name)))
            if not dry_run:
                remove_tree(run, name)
    return removed, skipped
