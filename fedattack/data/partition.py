"""Non-IID partitions with the semantics of Flower Datasets' partitioners, on in-memory labels.

`dirichlet` is `flwr_datasets.partitioner.DirichletPartitioner` (Hsu et al. 2019; Yurochkin et
al. 2019): for each class in turn, the class's records are divided among the partitions in
proportions drawn from Dirichlet(alpha) (``alpha`` a scalar, repeated, or one concentration per
partition); with ``self_balancing`` a partition already holding more than the average number of
records gets no more of later classes (the proportions of the others renormalised); the whole
draw is repeated (at most 10 times more) until every partition holds ``min_partition_size``
records; with ``shuffle`` each partition's records are shuffled. The generator is
``np.random.default_rng(seed)``. Small alpha gives each partition few classes (label skew) and
unequal sizes (quantity skew); large alpha tends to the IID split.

`quantity` is quantity skew alone: partition sizes in proportions drawn from Dirichlet(alpha),
at least ``min_partition_size`` each, records dealt at random whatever their class.

flwr-datasets itself partitions Hugging Face ``datasets`` objects, which this project does not
load (its datasets are numpy arrays read offline); these functions follow its documented
behaviour and return positions into the given labels; `dirichlet` gives, draw for draw, the
partitions flwr-datasets 0.6.1's own code gives (tests/data/flwr_datasets_partitions.json).
"""

from __future__ import annotations

import numpy as np

MAX_TRIES = 11  # as DirichletPartitioner: a first draw and at most 10 redraws


def _alphas(alpha: float | list[float], num_partitions: int) -> np.ndarray:
    values = np.full(num_partitions, float(alpha)) if np.isscalar(alpha) else np.asarray(
        alpha, dtype=float)
    if values.shape != (num_partitions,) or not (values > 0).all():
        raise ValueError(f"alpha must be a positive number or {num_partitions} positive numbers")
    return values


def dirichlet(labels: np.ndarray, num_partitions: int, alpha: float | list[float],
              min_partition_size: int = 10, self_balancing: bool = False, shuffle: bool = True,
              seed: int = 42) -> list[np.ndarray]:
    """Positions into `labels` of each partition (DirichletPartitioner's semantics)."""
    labels = np.asarray(labels)
    alphas = _alphas(alpha, num_partitions)
    rng = np.random.default_rng(seed)
    average = len(labels) / num_partitions
    for _ in range(MAX_TRIES):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for k in np.unique(labels):
            of_k = np.nonzero(labels == k)[0]
            proportions = rng.dirichlet(alphas)
            if self_balancing:
                full = np.array([len(p) > average for p in parts])
                proportions = np.where(full, 0.0, proportions)
                proportions = proportions / proportions.sum()
            cuts = (np.cumsum(proportions) * len(of_k)).astype(int)[:-1]
            for part, chunk in zip(parts, np.split(of_k, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_partition_size:
            break
    else:
        raise ValueError(
            f"data.partition dirichlet: after {MAX_TRIES} draws some participant still held fewer "
            f"than min_partition_size={min_partition_size} records; raise alpha, lower "
            "min_partition_size or use fewer participants")
    out = [np.asarray(p, dtype=np.int64) for p in parts]
    if shuffle:
        for p in out:
            rng.shuffle(p)
    return out


def quantity(num_records: int, num_partitions: int, alpha: float | list[float],
             min_partition_size: int = 10, seed: int = 42) -> list[np.ndarray]:
    """Positions 0..num_records-1 dealt at random into partitions of Dirichlet(alpha) sizes."""
    alphas = _alphas(alpha, num_partitions)
    spare = num_records - min_partition_size * num_partitions
    if spare < 0:
        raise ValueError(f"data.partition quantity: {num_records} records cannot give "
                         f"{num_partitions} participants {min_partition_size} each")
    rng = np.random.default_rng(seed)
    extra = np.floor(rng.dirichlet(alphas) * spare).astype(int)
    extra[: spare - extra.sum()] += 1  # the rounding remainder, one record each
    sizes = extra + min_partition_size
    order = rng.permutation(num_records)
    return [np.sort(p) for p in np.split(order, np.cumsum(sizes)[:-1])]


def class_counts(labels: np.ndarray, partitions: list[np.ndarray],
                 num_classes: int) -> list[list[int]]:
    """Per partition, its number of records of each class."""
    return [np.bincount(labels[p], minlength=num_classes).tolist() for p in partitions]
