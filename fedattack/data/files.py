"""The in-memory `Dataset` and the file plumbing the loaders share: finding a dataset's files
(plain or gzipped), reading them, and writing arrays atomically.

The loaders (images, tabular, synthetic) import from here and the registry imports the loaders,
so nothing imports back up: a file that is missing raises `FilesMissing`, which the registry turns
into a message naming the ways to get the dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from fedattack.io import write_atomic


class DatasetUnavailable(RuntimeError):
    """A real dataset whose files are not on this machine; the message says how to get them."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A whole dataset in memory, in compact form; `batch` turns records into model inputs.

    `x` is uint8 for binary features and for images (N, C, H, W), float32 otherwise. Images carry
    their per-channel `mean` and `std` (on the [0, 1] scale) for normalisation.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.x.shape[1:] != self.input_shape or len(self.x) != len(self.y):
            raise ValueError(
                f"{self.name}: x {self.x.shape} and y {self.y.shape} do not match input shape "
                f"{self.input_shape}"
            )

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 inputs (images scaled to [0, 1] and normalised per channel) and int64 labels."""
        x = torch.from_numpy(self.x[idx]).float()
        if self.mean is not None:
            mean = torch.tensor(self.mean).view(-1, 1, 1)
            std = torch.tensor(self.std).view(-1, 1, 1)
            x = (x / 255 - mean) / std
        return x, torch.from_numpy(self.y[idx]).long()


def dataset_digest(dataset) -> str:
    """The dataset's name and a SHA-256 of its records and labels (dtypes and shapes included):
    the same digest means the same data."""
    h = hashlib.sha256()
    for arr in (dataset.x, dataset.y):
        h.update(str((arr.dtype, arr.shape)).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return f"{dataset.name}:{h.hexdigest()[:32]}"


class FilesMissing(DatasetUnavailable):
    """Some of a dataset's files are in none of the folders searched (see `locate`)."""

    def __init__(self, name: str, dirs: Sequence[Path], missing: list[str]) -> None:
        self.name, self.dirs, self.missing = name, tuple(dirs), missing
        super().__init__(f"{name}: {', '.join(missing)} not found in {dirs[0]}")


def find_file(folder: Path, file: str) -> Path | None:
    """folder/file, or its gzipped copy folder/file.gz, whichever exists."""
    for candidate in (folder / file, folder / f"{file}.gz"):
        if candidate.is_file():
            return candidate
    return None


def open_data(path: Path) -> BinaryIO:
    """Open a data file for reading, decompressing it on the fly if it ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_data(folder: Path, file: str) -> bytes:
    """The bytes of folder/file (or of folder/file.gz, decompressed)."""
    path = find_file(folder, file)
    if path is None:
        raise FileNotFoundError(folder / file)
    with open_data(path) as f:
        return f.read()


def locate(name: str, dirs: Sequence[Path], files: Sequence[str]) -> Path:
    """The first of `dirs` that holds every one of `files`; else DatasetUnavailable.

    The message names the files missing from the first folder, which is where a user should
    put them, and the ways to get them.
    """
    for folder in dirs:
        if all(find_file(folder, f) for f in files):
            return folder
    raise FilesMissing(name, dirs, [f for f in files if not find_file(dirs[0], f)])


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez through a temporary file and a rename: readers never see half a file."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())
