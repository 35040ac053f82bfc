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
