"""`fedattack clean`: remove the caches of finished runs, never their results.

A run directory's feature cache (``features/``) is most of its size (202 of the quickstart's
263 MB) and is rebuilt from the snapshots when needed; results, splits, snapshots and figures are
what a run is kept for. Only runs whose attack has finished (``results.json`` is there) are
cleaned, so an interrupted attack keeps the cache it resumes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fedattack.io import remove_tree

CACHE_DIRS = ("features",)  # folders of a run directory that hold only derived, rebuildable data
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"


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


def run_dirs(root: Path) -> list[Path]:
    """``root`` itself if it is a run directory, else the run directories below it (a campaign)."""
    if (root / RUN_FILE).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(RUN_FILE) if p.is_file() and not p.is_symlink())


def clean_caches(root: str | Path, dry_run: bool = False) -> tuple[list[Removed], list[Path]]:
    """Remove the caches of every finished run under ``root``; return what was (or, with
    ``dry_run``, would be) removed and the runs skipped because their attack has not finished.
    Raises FileNotFoundError when ``root`` holds no run directory at all."""
    root = Path(root)
    runs = run_dirs(root) if root.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"{root} holds no run directory (no {RUN_FILE} in it or below it)")
    removed, skipped = [], []
    for run in runs:
        caches = [run / name for name in CACHE_DIRS
                  if (run / name).is_dir() and not (run / name).is_symlink()]
        if not caches:
            continue
        if not (run / RESULTS_FILE).is_file():
            skipped.append(run)
            continue
        for cache in caches:
            removed.append(Removed(cache, folder_bytes(cache)))
            if not dry_run:
                remove_tree(run, cache)
    return removed, skipped
