"""The on-disk feature cache: ``.npy`` files written and read by rows, never memory-mapped or
unpickled, with an index and checksums (see :meth:`FeatureExtractor.cache`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedattack.features.memory import _BYTES, _empty
from fedattack.io import CorruptedFile, read_json, verify_checksums

CACHE_INDEX = "index.json"
CACHE_VERSION = 3  # 2: act:<layer> is the activation function's output, no longer the layer's;
# 3: the spec carries output_scale, the loss is computed in float64


class FeatureCache:
    """Read side of a feature cache written by :meth:`FeatureExtractor.cache`: rows read from the
    ``.npy`` files on demand (``pread``, never memory-mapped, never unpickled), so holding a
    cache costs no memory. Row ``i`` holds the features of dataset record ``indices[i]``."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.path = Path(path)
        index_file = self.path / CACHE_INDEX
        if not index_file.is_file():
            raise FileNotFoundError(
                f"no finished feature cache at {self.path} ({CACHE_INDEX} missing)"
            )
        remedy = f"delete {self.path} to recompute the cache"
        try:
            self.index = read_json(index_file)
        except (OSError, ValueError) as err:
            raise CorruptedFile(index_file, f"unreadable ({err})", remedy) from None
        if self.index.get("version") != CACHE_VERSION:
            raise ValueError(
                f"{self.path}: a feature cache of version {self.index.get('version')}, this "
                f"fedattack reads version {CACHE_VERSION}; delete the folder to recompute it"
            )
        self._count = int(self.index["count"])
        try:
            self.indices = np.load(self.path / "indices.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise CorruptedFile(self.path / "indices.npy", f"unreadable ({err})", remedy) from None
        self._files = {
            k: _NpyRows.open(self.path / c["file"], (self._count, *c["shape"]))
            for k, c in self.index["components"].items()
        }
        if verify:  # a zeroed or swapped feature file would silently change the attack
            verify_checksums(self.path, _cache_files(self.index), remedy)

    def __len__(self) -> int:
        return self._count

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(c["shape"]) for k, c in self.index["components"].items()}

    def take(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Features of cache rows ``rows`` (positions, not dataset indices), in that order."""
        rows = _as_indices(rows)
        if rows.size and not (0 <= rows.min() and rows.max() < self._count):
            raise IndexError(f"cache rows must be in [0, {self._count}), got {rows.min()}..."
                             f"{rows.max()}")
        return {k: f.read_rows(rows) for k, f in self._files.items()}

    def batches(
        self, order: np.ndarray | None = None, batch_size: int = 256
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Rows in ``order`` (default: all, in cache order), ``batch_size`` at a time."""
        order = np.arange(self._count) if order is None else _as_indices(order)
        for start in range(0, len(order), batch_size):
            yield self.take(order[start : start + batch_size])


class _NpyRows:
    """A C-ordered float32 ``.npy`` file written and read by rows with ``pwrite``/``preadv``.

    A run of consecutive rows is one system call. The file is a standard ``.npy`` file
    (``np.load`` reads it); it is never mapped into the process (see
    :meth:`FeatureExtractor.cache`)."""

    def __init__(self, path: Path, shape: tuple[int, ...], fd: int, offset: int) -> None:
        self.path, self._fd, self._offset = path, fd, offset
        self._row_shape = shape[1:]
        self._row_bytes = _BYTES * math.prod(self._row_shape)
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def create(cls, path: Path, shape: tuple[int, ...]) -> _NpyRows:
        """A new file of ``shape`` (a header, then zeros until written)."""
        header = {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            offset = f.tell()
            f.truncate(offset + _BYTES * math.prod(shape))
        return cls(path, tuple(shape), os.open(path, os.O_RDWR), offset)

    @classmethod
    def open(cls, path: Path, shape: tuple[int, ...]) -> _NpyRows:
        """An existing file, checked to hold ``shape`` float32 in C order, all of it."""
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            got, fortran, dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
        if (got, fortran, dtype) != (tuple(shape), False, np.dtype("<f4")) or size != (
            offset + _BYTES * math.prod(shape)
        ):
            raise ValueError(
                f"{path}: shape {got} {dtype}{' (Fortran order)' if fortran else ''}, "
                f"{size} bytes; expected {tuple(shape)} float32 in C order"
            )
        return cls(path, tuple(shape), os.open(path, os.O_RDONLY), offset)

    def write_rows(self, start: int, values: torch.Tensor) -> None:
        """Rows ``start, start + 1, ...`` from ``values`` (a CPU float32 tensor)."""
        data = memoryview(values.contiguous().numpy()).cast("B")
        position = self._offset + start * self._row_bytes
        while data:
            written = os.pwrite(self._fd, data, position)
            data, position = data[written:], position + written

    def read_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Rows ``rows``, in that order, as a ``(len(rows), *row_shape)`` tensor."""
        out = _empty((len(rows), *self._row_shape), torch.device("cpu"))
        if not len(rows):
            return out
        flat = memoryview(out.numpy()).cast("B")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # where a run of consecutive rows starts
        starts, ends = np.concatenate(([0], breaks)), np.concatenate((breaks, [len(rows)]))
        for first, end in zip(starts, ends, strict=True):
            view = flat[first * self._row_bytes : end * self._row_bytes]
            position = self._offset + int(rows[first]) * self._row_bytes
            while view:
                got = os.preadv(self._fd, [view], position)
                if got == 0:
                    raise OSError(f"{self.path}: unexpected end of file")
                view, position = view[got:], position + got
        return out

    def close(self, sync: bool = False) -> None:
        """Closes the file, after ``fsync`` if ``sync``."""
        if sync and self._closer.alive:
            os.fsync(self._fd)
        self._closer()



def _as_indices(indices: np.ndarray | Sequence[int]) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _fingerprint(snapshots: Sequence[dict[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for snap in snapshots:
        for k in sorted(snap):
            h.update(k.encode())
            h.update(snap[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _cache_files(index: dict[str, Any]) -> list[str]:
    """The files of a finished feature cache that its checksums cover."""
    return ["indices.npy", *(c["file"] for c in index["components"].values()), CACHE_INDEX]


def _existing_cache(path: Path, index: dict[str, Any]) -> FeatureCache:
    """The cache already at ``path`` if it is the one ``index`` describes."""
    if not (path / CACHE_INDEX).is_file():
        raise FileExistsError(f"{path} exists and is not a finished feature cache")
    cache = FeatureCache(path)
    if cache.index != json.loads(json.dumps(index)):
        raise FileExistsError(f"{path} holds a feature cache of other snapshots, spec or records")
    return cache
