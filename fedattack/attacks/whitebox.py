"""The supervised white-box attack of Nasr et al.: training and scoring (Section III-E).

Features come through a :class:`FeatureSource`, which gives random access to records (``take``) and
streams them (``batches``), so that a memory-mapped cache larger than memory can be attacked: the
attack only ever holds one batch.

Training follows the paper: Adam with learning rate 1e-4, batches of 64 of which half are members
and half non-members (each half sampled from its own side every step, so a batch is balanced even
when the sides differ in size), 100 epochs, and the epoch with the best accuracy kept. The loss is
the squared error between Pr{member} and membership. The attacker's own data is split into a
training part and a validation part (``validation_fraction`` of each side) on which the best epoch
is chosen; evaluation records are never seen.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from .network import AttackNetwork

Batch = dict[str, Tensor]

ADAM_EPS = 1e-12
"""Adam's epsilon, far below torch's default 1e-8. With the paper's N(0, 0.01) initialisation each
layer shrinks the signal about tenfold, so the early layers' gradients start near 1e-8 or below,
where the default epsilon dominates Adam's denominator and all but freezes them; the
encoder-decoder of the unsupervised attack, two layers deeper, then never leaves its plateau."""


@runtime_checkable
class FeatureSource(Protocol):
    """Feature records, each a dict of component tensors (see ``network.py`` for the shapes)."""

    def __len__(self) -> int: ...

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-record shape of each component (no batch dimension)."""
        ...

    def take(self, rows: np.ndarray) -> Batch:
        """The records at ``rows``, in that order, as (len(rows), *shape) tensors."""
        ...

    def batches(self, order: np.ndarray | None = None, batch_size: int = 256) -> Iterator[Batch]:
        """The records in ``order`` (all, in index order, by default), ``batch_size`` at a time."""
        ...


class TensorSource:
    """A :class:`FeatureSource` over in-memory tensors sharing their first (record) dimension."""

    def __init__(self, tensors: dict[str, Tensor]):
        if not tensors:
            raise ValueError("a TensorSource needs at least one component")
        lengths = {name: len(t) for name, t in tensors.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"components differ in their number of records: {lengths}")
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(t.shape[1:]) for name, t in self.tensors.items()}

    def take(self, rows: np.ndarray) -> Batch:
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return {name: t[index] for name, t in self.tensors.items()}

    def batches(self, order: np.ndarray | None = None, batch_size: int = 256) -> Iterator[Batch]:
        order = np.arange(len(self)) if order is None else np.asarray(order)
        for start in range(0, len(order), batch_size):
            yield self.take(order[start : start + batch_size])


@contextmanager
def seeded(seed: int, device: str | torch.device):
    """Seed torch (init, dropout) inside the block without disturbing the caller's RNG state."""
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def to_device(batch: Batch, device: str | torch.device) -> Batch:
    return {name: t.to(device, non_blocking=True) for name, t in batch.items()}


@torch.no_grad()
def network_outputs(
    method: Callable[[Batch], Tensor],
    source: FeatureSource,
    order: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``method`` (e.g. ``network.embed``, in eval mode) on the records in ``order``, as float64."""
    outputs = [
        method(to_device(batch, device)).double().cpu().numpy()
        for batch in source.batches(order=order, batch_size=batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros(0)


def balanced_batches(
    member_rows: np.ndarray, nonmember_rows: np.ndarray, half: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (member rows, non-member rows) pairs, ``half`` rows of each per step.

    An epoch has enough steps to see the larger side once; each side is walked through random
    permutations of itself, reshuffled whenever one is used up, so the smaller side is seen
    several times per epoch and every record of a side equally often (up to one).
    """
    steps = math.ceil(max(len(member_rows), len(nonmember_rows)) / half)
    members = _permutation_stream(member_rows, steps * half, rng)
    nonmembers = _permutation_stream(nonmember_rows, steps * half, rng)
    for step in range(steps):
        window = slice(step * half, (step + 1) * half)
        yield members[window], nonmembers[window]


def _permutation_stream(rows: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    repeats = math.ceil(length / len(rows))
    return np.concatenate([rng.permutation(rows) for _ in range(repeats)])[:length]


def balanced_accuracy(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Mean of the accuracies on members (score >= 0.5) and on non-members (score < 0.5).

    Equal to the plain accuracy on a balanced set, as in the paper's evaluation; on an unbalanced
    validation split it does not reward a bias towards the larger side.
    """
    return float((np.mean(member_scores >= 0.5) + np.mean(nonmember_scores < 0.5)) / 2)


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random (training rows, validation rows) of range(n); both non-empty when fraction > 0."""
    if fraction == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    if n < 2:
        raise ValueError(f"cannot hold out a validation split from {n} record(s)")
    n_val = min(max(1, round(n * fraction)), n - 1)
    rows = rng.permutation(n)
    return np.sort(rows[n_val:]), np.sort(rows[:n_val])


def _common_shapes(*sources: FeatureSource) -> dict[str, tuple[int, ...]]:
    shapes = [source.shapes() for source in sources]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError(f"the sources' component shapes differ: {shapes}")
    return shapes[0]


class WhiteBoxAttack:
    """Supervised attack: an :class:`AttackNetwork` trained on known members and non-members.

    ``on_epoch``, if given, is called with each epoch's history record. ``patience`` stops training
    after that many epochs without a better validation accuracy. Epochs are numbered from 1.

    After :meth:`fit`: ``network_`` (best epoch restored), ``history_`` (one dict per epoch:
    ``epoch``, ``train_loss``, and ``val_accuracy``, the balanced accuracy on the validation
    split, when there is one), ``best_epoch_``, and ``validation_rows_`` (the held-out rows of the
    member and of the non-member source). With ``validation_fraction=0`` the last epoch is kept.
    """

    def __init__(
        self,
        epochs: int = 100,
        lr: float = 1e-4,
        batch_size: int = 64,
        kernels: int = 1000,
        patience: int | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        validation_fraction: float = 0.2,
        on_epoch: Callable[[dict], None] | None = None,
    ):
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.kernels = kernels
        self.patience = patience
        self.device = device
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.on_epoch = on_epoch

    def fit(self, members: FeatureSource, nonmembers: FeatureSource) -> WhiteBoxAttack:
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2, got {self.batch_size}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        shapes = _common_shapes(members, nonmembers)
        rng = np.random.default_rng(self.seed)
        member_train, member_val = _split(len(members), self.validation_fraction, rng)
        nonmember_train, nonmember_val = _split(len(nonmembers), self.validation_fraction, rng)
        self.validation_rows_ = (member_val, nonmember_val)
        validating = self.validation_fraction > 0

        with seeded(self.seed, self.device):
            self.network_ = AttackNetwork(shapes, kernels=self.kernels).to(self.device)
            optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr, eps=ADAM_EPS)
            self.history_: list[dict] = []
            best_accuracy, best_state, self.best_epoch_ = -1.0, None, 0
            for epoch in range(1, self.epochs + 1):
                steps = balanced_batches(member_train, nonmember_train, self.batch_size // 2, rng)
                loss = self._train_epoch(optimizer, steps, members, nonmembers)
                record = {"epoch": epoch, "train_loss": loss}
                if validating:
                    record["val_accuracy"] = self._accuracy(
                        members, nonmembers, member_val, nonmember_val
                    )
                self.history_.append(record)
                if self.on_epoch is not None:
                    self.on_epoch(record)
                if not validating:
                    self.best_epoch_ = epoch
                elif record["val_accuracy"] > best_accuracy:
                    best_accuracy, self.best_epoch_ = record["val_accuracy"], epoch
                    best_state = copy.deepcopy(self.network_.state_dict())
                elif self.patience is not None and epoch - self.best_epoch_ >= self.patience:
                    break
            if best_state is not None:
                self.network_.load_state_dict(best_state)
        self.network_.eval()
        return self

    def _train_epoch(
        self,
        optimizer: torch.optim.Optimizer,
        steps: Iterator[tuple[np.ndarray, np.ndarray]],
        members: FeatureSource,
        nonmembers: FeatureSource,
    ) -> float:
        """One pass of balanced steps; returns the mean squared error over the steps."""
        self.network_.train()
        losses = []
        for member_rows, nonmember_rows in steps:
            # Sorted rows: cheaper reads from a memory-mapped source; order within a half is moot.
            m = members.take(np.sort(member_rows))
            n = nonmembers.take(np.sort(nonmember_rows))
            batch = to_device({name: torch.cat([m[name], n[name]]) for name in m}, self.device)
            target = torch.cat([torch.ones(len(member_rows)), torch.zeros(len(nonmember_rows))])
            probability = torch.sigmoid(self.network_(batch))
            loss = nn.functional.mse_loss(probability, target.to(probability.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    def _accuracy(self, members, nonmembers, member_rows=None, nonmember_rows=None) -> float:
        return balanced_accuracy(
            self._probabilities(members, member_rows),
            self._probabilities(nonmembers, nonmember_rows),
        )

    def _probabilities(self, source: FeatureSource, rows: np.ndarray | None) -> np.ndarray:
        self.network_.eval()
        return network_outputs(
            lambda batch: torch.sigmoid(self.network_(batch)),
            source,
            rows,
            self.batch_size,
            self.device,
        )

    def predict_proba(self, source: FeatureSource) -> np.ndarray:
        """Pr{member} for each record of ``source``, in source order."""
        return self._probabilities(source, None)

    def predict(self, source: FeatureSource) -> np.ndarray:
        """1 (member) where Pr{member} >= 0.5, else 0."""
        return (self.predict_proba(source) >= 0.5).astype(np.int64)

    def score(self, members: FeatureSource, nonmembers: FeatureSource) -> float:
        """Balanced accuracy on these members and non-members (see :func:`balanced_accuracy`)."""
        return self._accuracy(members, nonmembers)
