"""Seeded synthetic stand-ins for Purchase100 and Texas100, built the way the originals were.

Each record is a customer (patient) whose items (attributes) are drawn independently, each with
a probability from a blend of two latent profiles: a profile has a few core items it holds
often and everything else rarely. The records are then labelled by k-means into 100 classes, as
Shokri et al. labelled the real ones by clustering. Blended records lie between clusters, so the
labels are learnable but a model trained on a few thousand records overfits, as on the real data.

The parameters were tuned so that the paper's fully connected Tanh model (Adam, lr 1e-3)
trained on 10,000 records fits them perfectly and reaches about 79% (Purchase) and 55% (Texas)
on held-out records, close to the paper's 80% and 52%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
from sklearn.cluster import KMeans

from fedattack.data.files import Dataset
from fedattack.data.tabular import NUM_CLASSES, binary_dataset, cached

_CHUNK = 2048


@dataclass(frozen=True)
class SyntheticSpec:
    """How one stand-in is generated (see the module docstring)."""

    name: str
    num_features: int
    num_records: int  # default size
    profiles: int
    core_items: int  # items typical of a profile
    core_prob: float  # a core item has probability uniform in [core_prob / 2, core_prob]
    background: float  # probability of any other item


PURCHASE = SyntheticSpec("purchase100-synth", 600, 30_000, 50, 30, 0.7, 0.005)
# The privacytrustlab Texas100 file has 6,169 features (the paper says 6,170).
TEXAS = SyntheticSpec("texas100-synth", 6169, 30_000, 30, 60, 0.7, 0.002)


def build(spec: SyntheticSpec, folder: Path, num_records: int | None, seed: int) -> Dataset:
    """The (num_records, seed) variant, generated once and then read from its cache file."""
    n = num_records or spec.num_records
    if n < NUM_CLASSES:
        raise ValueError(f"{spec.name} needs at least {NUM_CLASSES} records, got {n}")
    cache = folder / f"{spec.name}-n{n}-s{seed}.npz"
    x, y = cached(cache, lambda: generate(spec, n, seed))
    return binary_dataset(spec.name, x, y)


def generate(spec: SyntheticSpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n binary records (uint8) and their k-means labels."""
    rng = np.random.default_rng(seed)
    probs = _profiles(spec, rng)
    x = np.concatenate([_records(probs, min(_CHUNK, n - i), rng) for i in range(0, n, _CHUNK)])
    # Sparse input makes k-means ~20x faster on these records (2-3% ones).
    records = scipy.sparse.csr_matrix(x, dtype=np.float32)
    labels = KMeans(NUM_CLASSES, n_init=1, random_state=seed).fit(records).labels_
    return x, labels.astype(np.int64)


def _profiles(spec: SyntheticSpec, rng: np.random.Generator) -> np.ndarray:
    """(profiles, features) item probabilities."""
    probs = np.full((spec.profiles, spec.num_features), spec.background, np.float32)
    for row in probs:
        core = rng.choice(spec.num_features, spec.core_items, replace=False)
        row[core] = rng.uniform(spec.core_prob / 2, spec.core_prob, spec.core_items)
    return probs


def _records(probs: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n records, each blending two random profiles with the first weighing 50-100%."""
    first, second = rng.integers(len(probs), size=(2, n))
    weight = rng.uniform(0.5, 1.0, size=(n, 1)).astype(np.float32)
    p = weight * probs[first] + (1 - weight) * probs[second]
    return (rng.random(p.shape, dtype=np.float32) < p).astype(np.uint8)
