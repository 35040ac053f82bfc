"""Atomic file writes: an interrupted run never leaves a half-written file a reader would trust."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write to path via a temporary file in the same folder, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json_values(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None, which JSON can express (e.g. the
    epsilon of DP-SGD without noise is infinite)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json_values(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json_values(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Standard JSON (no NaN or Infinity tokens), written atomically."""
    text = json.dumps(strict_json_values(obj), indent=2, allow_nan=False)
    write_atomic(path, text + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class UnsafePath(ValueError):
    """A path a run would write or delete that does not lie inside its run directory."""


def _is_inside(root: Path, target: Path) -> bool:
    return target == root or root in target.parents


def inside(root: str | Path, path: str | Path) -> Path:
    """``path`` (relative to ``root``, or absolute) after proving that it lies inside ``root``
    once every ``..`` and symbolic link is resolved; raises UnsafePath otherwise.

    Every file a run writes or deletes goes through this first, so that neither a name such as
    ``..`` nor a symbolic link planted in a run directory can make it touch anything outside."""
    root = Path(root)
    resolved_root = root.resolve()
    target = (root / path).resolve()
    if target == resolved_root or not _is_inside(resolved_root, target):
        raise UnsafePath(f"{root / path} lies outside the run directory {root}; refusing to "
                         "write or delete it")
    return root / path


def child_dir(parent: str | Path, name: str) -> Path:
    """``parent/name`` for a run directory named after an experiment or campaign, after proving
    that ``name`` is one plain path component and the result lies inside ``parent``."""
    if (not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name
            or os.sep in name or (os.altsep and os.altsep in name)):
        raise UnsafePath(f"{name!r} is not a plain folder name; refusing to use it as a run "
                         f"directory under {parent}")
    return inside(parent, name)


def remove_tree(root: str | Path, path: str | Path) -> None:
    """Delete the folder ``path`` inside ``root`` (proven inside first); absent is fine."""
    import shutil

    target = inside(root, path)
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)


def remove_file(root: str | Path, path: str | Path) -> None:
    """Delete the file ``path`` inside ``root`` (proven inside first); absent is fine."""
    inside(root, path).unlink(missing_ok=True)
