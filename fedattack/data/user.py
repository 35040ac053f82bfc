"""Your own data as a `Dataset`: a CSV file, a NumPy .npz, an image folder, a Hugging Face
dataset (through `datasets`, the library Flower Datasets loads with) or a loader callable.

Each source ends in the same checks (:func:`to_dataset`): as many labels as records, integer
classes from 0 with at least two present, finite numeric features. Whatever is wrong is one line
naming the config field (``data.dataset.csv: ...``), raised as a ConfigError before any training.
Tabular records are float32 (N, F); images uint8 (N, C, H, W) with their per-channel mean and
standard deviation, as the built-in image datasets.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedattack.config import ConfigError
from fedattack.config.data import DatasetSource
from fedattack.data.files import Dataset

FIELD = "data.dataset"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".pbm", ".tif",
                  ".tiff", ".webp"}
HF_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _refuse(key: str, message: str) -> ConfigError:
    return ConfigError(f"{FIELD}.{key}: {message}")


def load_source(source: DatasetSource, cache: Path) -> Dataset:
    """The dataset `source` names; `cache` is where Hugging Face keeps what it downloads."""
    loaders = {"csv": load_csv, "npz": load_npz, "imagefolder": load_imagefolder,
               "loader": load_callable}
    if source.source == "hf":
        return load_hf(source, cache)
    return loaders[source.source](source)


def _existing(path: str, key: str, kind: str = "file") -> Path:
    found = Path(path)
    if not (found.is_file() if kind == "file" else found.is_dir()):
        raise _refuse(key, f"{found} is not an existing {kind}")
    return found


def _classes(labels: Sequence[Any], key: str) -> np.ndarray:
    """Labels as int64 classes: integers stay as they are (negative ones are refused); any
    other labels are numbered in sorted order."""
    values = _integers_if_all(np.asarray(labels))
    if values.ndim != 1:
        raise _refuse(key, f"labels must be one per record, got an array of shape {values.shape}")
    if values.dtype.kind in "iu" or (values.dtype.kind == "f" and np.isfinite(values).all()
                                     and (values == np.round(values)).all()):
        classes = values.astype(np.int64)
        if len(classes) and classes.min() < 0:
            raise _refuse(key, f"label {classes.min()} is negative; classes are 0, 1, ...")
        return classes
    text = [str(v) for v in labels]
    if values.dtype.kind == "f" or any(t.strip() == "" for t in text):
        raise _refuse(key, "labels must be integers or names (found an empty or non-finite one)")
    names = sorted(set(text))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[t] for t in text], dtype=np.int64)


def _integers_if_all(values: np.ndarray) -> np.ndarray:
    """Labels read as text ('0', '1', ...) as integers when every one is an integer."""
    if values.dtype.kind not in "USO":
        return values
    try:
        return np.array([int(str(v)) for v in values], dtype=np.int64)
    except ValueError:
        return values


def to_dataset(name: str, x: Any, y: Any, key: str, images: bool = False) -> Dataset:
    """The checked Dataset of records `x` labelled `y` (`key` names the config field)."""
    x = np.asarray(x)
    y = _classes(y, key)
    if len(x) != len(y):
        raise _refuse(key, f"{len(x)} records but {len(y)} labels; give one label per record")
    if len(y) == 0:
        raise _refuse(key, "no records")
    present = np.unique(y)
    if len(present) < 2:
        raise _refuse(key, f"every record has label {present[0]}; membership is measured on a "
                      "classifier of at least two classes")
    if x.dtype.kind not in "iufb":
        raise _refuse(key, f"records of type {x.dtype} are not numeric")
    if x.ndim == 1:
        x = x[:, None]
    if images:
        mean, std = _channel_statistics(x)
        return Dataset(name, x, y, int(y.max()) + 1, tuple(x.shape[1:]), mean, std)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise _refuse(key, "some feature values are NaN or infinite")
    return Dataset(name, x, y, int(y.max()) + 1, tuple(x.shape[1:]))


def _channel_statistics(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W) on the [0, 1] scale."""
    scaled = x.astype(np.float64) / 255
    mean = scaled.mean(axis=(0, 2, 3))
    std = np.maximum(scaled.std(axis=(0, 2, 3)), 1e-3)  # a constant channel is not divided by 0
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def load_csv(source: DatasetSource) -> Dataset:
    """A CSV with a header: the label column, every other column a numeric feature."""
    path = _existing(source.csv, "csv")
    label = source.label_column()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise _refuse("csv", f"cannot read {path} as CSV text ({err})") from None
    if len(rows) < 2:
        raise _refuse("csv", f"{path} needs a header row and at least one record")
    header, records = rows[0], rows[1:]
    if label not in header:
        raise _refuse("label", f"{path} has no column {label!r} (columns: "
                      f"{', '.join(header[:10])}{' ...' if len(header) > 10 else ''})")
    at = header.index(label)
    features = [c for i, c in enumerate(header) if i != at]
    if not features:
        raise _refuse("csv", f"{path} has no feature column besides {label!r}")
    x = np.empty((len(records), len(features)), dtype=np.float32)
    for row_number, row in enumerate(records, start=2):
        if len(row) != len(header):
            raise _refuse("csv", f"{path} line {row_number} has {len(row)} fields, the header "
                          f"{len(header)}")
        values = row[:at] + row[at + 1:]
        for column, value in enumerate(values):
            x[row_number - 2, column] = _number(value, path, row_number, features[column])
    return to_dataset(source.display_name(), x, [row[at] for row in records], "label")


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _refuse("csv", f"{path} line {line}, column {column!r}: {text!r} is not a number; "
                      "every column but the label must be numeric") from None
    if not math.isfinite(value):
        raise _refuse("csv", f"{path} line {line}, column {column!r}: {text!r} is not finite")
    return value


def load_npz(source: DatasetSource) -> Dataset:
    """Arrays `x` and `y` of an .npz, read without pickle."""
    path = _existing(source.npz, "npz")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [k for k in ("x", "y") if k not in arrays.files]
            if missing:
                raise _refuse("npz", f"{path} has no array {missing[0]!r} (arrays: "
                              f"{', '.join(arrays.files) or 'none'}); save x (records) and y "
                              "(labels)")
            x, y = arrays["x"], arrays["y"]
    except ConfigError:
        raise
    except Exception as err:  # not a zip, pickled objects, a truncated file
        raise _refuse("npz", f"cannot read {path} as a NumPy .npz without pickle "
                      f"({type(err).__name__}: {err})") from None
    return to_dataset(source.display_name(), x, y, "npz")


def load_imagefolder(source: DatasetSource) -> Dataset:
    """One sub-folder per class (classes in sorted order of the folder names), images of one
    size; all grey images give one channel, otherwise three (RGB)."""
    root = _existing(source.imagefolder, "imagefolder", "folder")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(c, f) for c, folder in enumerate(classes) for f in sorted(folder.iterdir())
             if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    held = sorted({classes[c].name for c, _ in files})
    if len(held) < 2:
        raise _refuse("imagefolder", f"{root} holds images of {len(held)} class(es) "
                      f"({', '.join(held) or 'none'}); it needs one sub-folder of images per "
                      "class, at least two")
    pictures = [_read_image(f) for _, f in files]
    grey = all(p.mode in GREY_MODES for p in pictures)
    size = pictures[0].size
    for (_, f), picture in zip(files, pictures, strict=True):
        if picture.size != size:
            raise _refuse("imagefolder", f"{f} is {picture.size[0]}x{picture.size[1]}, the "
                          f"others {size[0]}x{size[1]}; resize the images to one size")
    x = np.stack([_pixels(p, grey) for p in pictures])
    return to_dataset(source.display_name(), x, [c for c, _ in files], "imagefolder",
                      images=True)


def _read_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            return picture
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise _refuse("imagefolder", f"cannot read image {path} ({type(err).__name__}: "
                      f"{' '.join(str(err).split())})") from None


def _pixels(picture, grey: bool) -> np.ndarray:
    """uint8 (C, H, W)."""
    array = np.asarray(picture.convert("L" if grey else "RGB"), dtype=np.uint8)
    return array[None] if grey else array.transpose(2, 0, 1)


def load_callable(source: DatasetSource) -> Dataset:
    """What the loader returns: `(x, y)`, `{"x": ..., "y": ...}` or a torch Dataset of pairs."""
    from fedattack.usercode import call, import_object

    key = "loader"
    function = import_object(source.loader, f"{FIELD}.{key}")
    returned = call(function, source.loader, f"{FIELD}.{key}")
    x, y = _arrays(returned, source.loader)
    return to_dataset(source.display_name(), x, y, key)


def _arrays(returned: Any, ref: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(returned, dict) and {"x", "y"} <= set(returned):
        return _numpy(returned["x"]), _numpy(returned["y"])
    if isinstance(returned, tuple | list) and len(returned) == 2:
        return _numpy(returned[0]), _numpy(returned[1])
    if hasattr(returned, "__getitem__") and hasattr(returned, "__len__"):
        pairs = [returned[i] for i in range(len(returned))]
        if pairs and all(isinstance(p, tuple | list) and len(p) == 2 for p in pairs):
            return (np.stack([_numpy(p[0]) for p in pairs]),
                    np.array([_numpy(p[1]).item() for p in pairs]))
    raise _refuse("loader", f"{ref} returned a {type(returned).__name__}; return (x, y) arrays, "
                  "{'x': ..., 'y': ...} or a torch Dataset of (x, y) pairs")


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def load_hf(source: DatasetSource, cache: Path) -> Dataset:
    """A Hugging Face dataset: a local .csv/.json/.jsonl/.parquet file or a folder (offline), or a
    name on the Hub (online); its label column and feature columns (every other by default).
    One image column gives images; otherwise the columns are numbers or fixed-length lists."""
    try:
        import datasets
    except ImportError:
        raise _refuse("hf", "needs Hugging Face datasets: pip install 'fedattack[data]'") from None
    datasets.disable_progress_bars()  # the run's own progress display is the one shown
    location, split = source.hf, source.split or "train"
    path = Path(location).expanduser()
    try:
        if path.is_file():
            builder = HF_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise _refuse("hf", f"{path}: a local file must be one of "
                              f"{', '.join(sorted(HF_BUILDERS))}")
            table = datasets.load_dataset(builder, data_files=str(path), split=split,
                                          cache_dir=str(cache))
        else:
            table = datasets.load_dataset(str(path) if path.is_dir() else location, split=split,
                                          cache_dir=str(cache))
    except ConfigError:
        raise
    except Exception as err:  # not found offline, an unknown split, a malformed file
        raise _refuse("hf", f"cannot load {location!r} split {split!r} ("
                      f"{type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    return _from_table(source, table)


def _from_table(source: DatasetSource, table) -> Dataset:
    label = source.label_column()
    if label not in table.column_names:
        raise _refuse("label", f"{source.hf} has no column {label!r} (columns: "
                      f"{', '.join(table.column_names)})")
    columns = list(source.features or [c for c in table.column_names if c != label])
    unknown = [c for c in columns if c not in table.column_names]
    if unknown or not columns:
        raise _refuse("features", f"{source.hf} has no column {(unknown or ['(none)'])[0]!r} "
                      f"(columns: {', '.join(table.column_names)})")
    labels = table[label]
    image_columns = [c for c in columns if type(table.features[c]).__name__ == "Image"]
    if image_columns:
        if len(columns) != 1:
            raise _refuse("features", "an image column must be the only feature column")
        pictures = table[columns[0]]
        grey = all(p.mode in GREY_MODES for p in pictures)
        if len({p.size for p in pictures}) > 1:
            raise _refuse("hf", f"the images of {columns[0]!r} are not all of one size")
        x = np.stack([_pixels(p, grey) for p in pictures])
        return to_dataset(source.display_name(), x, labels, "hf", images=True)
    parts = []
    for column in columns:
        try:
            values = np.asarray(table.with_format("numpy")[column], dtype=np.float32)
        except (ValueError, TypeError):
            raise _refuse("features", f"column {column!r} is not numeric (or its lists differ "
                          "in length)") from None
        parts.append(values.reshape(len(values), -1))
    return to_dataset(source.display_name(), np.concatenate(parts, axis=1), labels, "hf")
