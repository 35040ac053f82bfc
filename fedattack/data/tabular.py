"""Purchase100 and Texas100 in the privacytrustlab format, and the binary-record helpers that the
synthetic stand-ins share.

Both are binary feature vectors in 100 classes (labels 1..100 in the files, 0..99 here). The
first load parses the CSV (about 800 MB for Texas100) and caches it bit-packed as an .npz next to
it; later loads read the cache unless a source file is newer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from fedattack.data.files import Dataset, find_file, locate, open_data, save_npz

PURCHASE_URL = "https://github.com/privacytrustlab/datasets/raw/master/dataset_purchase.tgz"
TEXAS_URL = "https://github.com/privacytrustlab/datasets/raw/master/dataset_texas.tgz"
NUM_CLASSES = 100
_BLOCK_BYTES = 1 << 26


def load_purchase100(folder: Path) -> Dataset:
    """`dataset_purchase`: one customer per line, `label,f1,...,f600`."""
    source = find_file(locate("purchase100", [folder], ["dataset_purchase"]), "dataset_purchase")

    def parse() -> tuple[np.ndarray, np.ndarray]:
        table = parse_csv(source)
        return _binary(source, table[:, 1:]), _zero_based(source, table[:, 0])

    x, y = cached(source.with_name("dataset_purchase.npz"), parse, stale_after=[source])
    return binary_dataset("purchase100", x, y)


def load_texas100(folder: Path) -> Dataset:
    """`texas/100/feats` (0/1 features, comma-separated) and `texas/100/labels` (one per line).

    The paper counts 6,170 binary features; the privacytrustlab file has 6,169 columns, and the
    width is taken from the file.
    """
    found = locate("texas100", [folder / "texas" / "100"], ["feats", "labels"])
    feats, labels = find_file(found, "feats"), find_file(found, "labels")

    def parse() -> tuple[np.ndarray, np.ndarray]:
        return _binary(feats, parse_csv(feats)), _zero_based(labels, parse_csv(labels)[:, 0])

    x, y = cached(found / "feats.npz", parse, stale_after=[feats, labels])
    return binary_dataset("texas100", x, y)


def parse_csv(path: Path) -> np.ndarray:
    """A CSV of integers in 0..255, as a uint8 (lines, columns) array.

    np.loadtxt would take minutes on Texas100's 415M values; np.fromstring parses a block of lines
    in C, and reading ~64 MB at a time bounds the memory to the result plus one block.
    """
    blocks: list[np.ndarray] = []
    with open_data(path) as f:
        while lines := f.readlines(_BLOCK_BYTES):
            columns = blocks[0].shape[1] if blocks else lines[0].count(b",") + 1
            blocks.append(_parse_lines(path, lines, columns))
    if not blocks:
        raise ValueError(f"{path}: empty file")
    return np.concatenate(blocks)


def _parse_lines(path: Path, lines: list[bytes], columns: int) -> np.ndarray:
    values = np.fromstring(b"".join(lines).replace(b"\n", b","), dtype=np.int32, sep=",")
    if values.size != len(lines) * columns or values.min() < 0 or values.max() > 255:
        raise ValueError(f"{path}: expected {columns} integers in 0..255 on every line")
    return values.reshape(len(lines), columns).astype(np.uint8)


def _binary(path: Path, x: np.ndarray) -> np.ndarray:
    if x.max(initial=0) > 1:
        raise ValueError(f"{path}: features must be 0 or 1, found {x.max()}")
    return x


def _zero_based(path: Path, labels: np.ndarray) -> np.ndarray:
    if labels.min() < 1 or labels.max() > NUM_CLASSES:
        raise ValueError(
            f"{path}: labels must be 1..{NUM_CLASSES}, found {labels.min()}..{labels.max()}"
        )
    return labels.astype(np.int64) - 1


def cached(
    cache: Path,
    build: Callable[[], tuple[np.ndarray, np.ndarray]],
    stale_after: Sequence[Path] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Binary records (x, y) from the cache file, or built and cached there.

    A cache older than any file in `stale_after` is rebuilt. x is stored bit-packed (8 features
    a byte); no pickle either way.
    """
    if cache.exists() and all(cache.stat().st_mtime >= s.stat().st_mtime for s in stale_after):
        with np.load(cache, allow_pickle=False) as f:
            bits, y, width = f["bits"], f["y"], int(f["num_features"])
        return np.unpackbits(bits, axis=1, count=width), y
    x, y = build()
    save_npz(cache, bits=np.packbits(x, axis=1), y=y, num_features=np.int64(x.shape[1]))
    return x, y


def binary_dataset(name: str, x: np.ndarray, y: np.ndarray) -> Dataset:
    return Dataset(name, x, y.astype(np.int64), NUM_CLASSES, (x.shape[1],))
