"""The supervised white-box attack of Nasr et al.: training and scoring (Section III-E).

Features come through a :class:`FeatureSource`, which gives random access to records (``take``) and
streams them (``batches``), so that a memory-mapped cache larger than memory can be attacked: the
attack only ever holds one batch.

Training follows the paper where it learns: Adam with learning rate 1e-4, batches of 64 of which
half are members and half non-members (each half sampled from its own side every step, so a batch
is balanced even when the sides differ in size), at most 100 epochs. The loss is the squared error
between Pr{member} and membership. The attacker's own data is split into a training part and a
validation part (``validation_fraction`` of each side); the features are standardised with
statistics of the training part, and training stops on the validation AUC (the epoch with the
best one is kept; the paper keeps the best accuracy of a fixed number of epochs). Evaluation
records are never seen. Scores are the float64 logits (:meth:`WhiteBoxAttack.decision_function`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from fedattack.attack_registry import AttackOutcome, register

# torch, scipy and the attack network are imported where used: importing the attacks (which the
# config does, to read their names, parameters and checks) stays cheap.
if TYPE_CHECKING:
    import torch
    from torch import Tensor

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
        import torch

        index = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return {name: t[index] for name, t in self.tensors.items()}

    def batches(self, order: np.ndarray | None = None, batch_size: int = 256) -> Iterator[Batch]:
        order = np.arange(len(self)) if order is None else np.asarray(order)
        for start in range(0, len(order), batch_size):
            yield self.take(order[start : start + batch_size])


@contextmanager
def seeded(seed: int, device: str | torch.device):
    """Seed torch (init, dropout) inside the block without disturbing the caller's RNG state."""
    import torch

    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def to_device(batch: Batch, device: str | torch.device) -> Batch:
    return {name: t.to(device, non_blocking=True) for name, t in batch.items()}


def network_outputs(
    method: Callable[[Batch], Tensor],
    source: FeatureSource,
    order: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``method`` (e.g. ``network.embed``, in eval mode) on the records in ``order``, as float64
    (the network computes in float32; its outputs are widened, never passed through a float32
    sigmoid)."""
    import torch

    with torch.no_grad():
        outputs = [
            method(to_device(batch, device)).double().cpu().numpy()
            for batch in source.batches(order=order, batch_size=batch_size)
        ]
    return np.concatenate(outputs) if outputs else np.zeros(0)


def balanced_batches(
    member_rows: np.ndarray,
    nonmember_rows: np.ndarray,
    half: int,
    rng: np.random.Generator,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (member rows, non-member rows) pairs, ``half`` rows of each per step.

    An epoch has enough steps to see the larger side once; each side is walked through random
    permutations of itself, reshuffled whenever one is used up, so the smaller side is seen
    several times per epoch and every record of a side equally often (up to one). With
    ``weights`` (one non-negative array per side, aligned with its rows) each side's rows are
    drawn with replacement in proportion to them instead (see :func:`class_balance_weights`).
    """
    steps = math.ceil(max(len(member_rows), len(nonmember_rows)) / half)
    if weights is None:
        members = _permutation_stream(member_rows, steps * half, rng)
        nonmembers = _permutation_stream(nonmember_rows, steps * half, rng)
    else:
        members, nonmembers = (
            rng.choice(rows, steps * half, p=w / w.sum())
            for rows, w in ((member_rows, weights[0]), (nonmember_rows, weights[1]))
        )
    for step in range(steps):
        window = slice(step * half, (step + 1) * half)
        yield members[window], nonmembers[window]


def class_balance_weights(
    member_classes: np.ndarray, nonmember_classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sampling weights under which members and non-members have the same class distribution,
    so that the class (the ``label`` component, and the prediction that follows it) says
    nothing about membership.

    With m(c) members and n(c) non-members of class c, a member of class c weighs
    n(c) / (m(c) + n(c)) and a non-member m(c) / (m(c) + n(c)): both sides' weighted class
    counts are then m(c) n(c) / (m(c) + n(c)). A class on one side only weighs 0.

    Why: with 100 classes and a few hundred known records, the known members and non-members
    of a class differ in number by chance, and the network learns that imbalance from the label
    (a lookup table of classes). It carries no information about the targets, and on a random
    validation split drawn from the same known records it is anti-correlated with membership:
    on the quickstart the training split's per-class member share scored AUC 0.38 on the
    validation split and 0.505 on the targets, so validation AUC, early stopping and the
    ``undertrained`` check all read that artefact."""
    member_classes = np.asarray(member_classes)
    nonmember_classes = np.asarray(nonmember_classes)
    classes = np.unique(np.concatenate([member_classes, nonmember_classes]))
    m = np.array([np.sum(member_classes == c) for c in classes], dtype=np.float64)
    n = np.array([np.sum(nonmember_classes == c) for c in classes], dtype=np.float64)
    member_w = (n / (m + n))[np.searchsorted(classes, member_classes)]
    nonmember_w = (m / (m + n))[np.searchsorted(classes, nonmember_classes)]
    if member_w.sum() == 0 or nonmember_w.sum() == 0:
        raise ValueError("class balancing needs a class that both members and non-members have")
    return member_w, nonmember_w


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


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Area under the ROC curve of scores (higher = member): the probability that a random member
    outscores a random non-member, ties counted half (Mann-Whitney, average ranks)."""
    n1, n0 = len(member_scores), len(nonmember_scores)
    if n1 == 0 or n0 == 0:
        raise ValueError("an AUC needs at least one member and one non-member")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([member_scores, nonmember_scores]))
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


STANDARDISE = ("component", "coordinate", "none")


def standardisation(
    parts: list[tuple[FeatureSource, np.ndarray]], batch_size: int = 256, per: str = "component"
) -> dict[str, tuple[Tensor, Tensor]]:
    """(mean, standard deviation) of each component over the records ``rows`` of each
    ``(source, rows)`` pair, streamed a batch at a time (float64 sums, the batches merged as in
    Chan et al.'s parallel variance), as float32 tensors of each component's per-record shape.

    ``per="component"``: one mean and one deviation per component, over all its coordinates
    (the relative sizes within a gradient matrix or a prediction vector are kept).
    ``per="coordinate"``: one per coordinate; a coordinate whose deviation is below a millionth
    of its component's root-mean-square deviation (constant on these records, e.g. the gradient
    of a dead unit) gets scale 1, so that standardising does not blow rounding noise up to unit
    variance. A component constant on these records gets scale 1."""
    if per not in STANDARDISE[:2]:
        raise ValueError(f"standardisation per {per!r}; known: {STANDARDISE[:2]}")
    import torch

    count, mean, m2 = 0, {}, {}
    for source, rows in parts:
        for batch in source.batches(order=np.sort(np.asarray(rows)), batch_size=batch_size):
            n = 0
            for name, x in batch.items():
                x = x.double()
                n = len(x)
                batch_mean = x.mean(0)
                batch_m2 = (x - batch_mean).square().sum(0)
                if name not in mean:
                    mean[name], m2[name] = batch_mean, batch_m2
                else:
                    delta = batch_mean - mean[name]
                    mean[name] = mean[name] + delta * (n / (count + n))
                    m2[name] = m2[name] + batch_m2 + delta.square() * (count * n / (count + n))
            count += n
    if count == 0:
        raise ValueError("standardisation needs at least one record")
    stats = {}
    for name in mean:
        variance = m2[name] / count
        if per == "component":
            overall = mean[name].mean()
            std = (variance + (mean[name] - overall).square()).mean().sqrt()
            shift = torch.full_like(mean[name], overall.item())
            scale = torch.full_like(mean[name], std.item() if std > 0 else 1.0)
        else:
            std = variance.sqrt()
            floor = 1e-6 * std.square().mean().sqrt()
            shift, scale = mean[name], torch.where(std > floor, std, torch.ones_like(std))
        stats[name] = (shift.float(), scale.float())
    return stats


LOSSES = ("mse", "bce")


class WhiteBoxAttack:
    """Supervised attack: an :class:`AttackNetwork` trained on known members and non-members.

    The known records are split into a training part and a validation part
    (``validation_fraction`` of each side). The features are standardised with the mean and
    deviation of the training part, per component or per coordinate (``standardise``, see
    :func:`standardisation`; the validation part and every record scored later go through the
    same transform). ``fit(..., classes=...)`` (each known record's class) weights the training
    draws so that members and non-members have the same class distribution
    (:func:`class_balance_weights`). Training stops when the validation AUC
    has not improved for ``patience`` epochs, or after ``epochs``, and the epoch of the best
    validation AUC is restored. ``init``: ``"default"`` (PyTorch's) or ``"paper"`` (N(0, 0.01),
    see ``network.py``). ``loss``: ``"mse"``, the paper's squared error between Pr{member} and
    membership, or ``"bce"``, the cross-entropy. ``on_epoch``, if given, is called with each
    epoch's history record. Epochs are numbered from 1.

    ``fit(members, nonmembers, reference=...)`` also takes the scores of a reference attack
    (e.g. the negated loss) for every record of each source; its AUC on the same validation
    records is ``reference_val_auc_``, and ``undertrained_`` says whether the learnt attack's
    best validation AUC is below it.

    After :meth:`fit`: ``network_`` (best epoch restored), ``history_`` (one dict per epoch:
    ``epoch``, ``train_loss`` and ``train_auc``, over the epoch's training steps as they went
    (train mode, dropout on), and with a validation split ``val_loss``, ``val_auc`` and
    ``val_accuracy``, the balanced accuracy at Pr{member} = 0.5), ``best_epoch_``, ``val_auc_``,
    ``reference_val_auc_``, ``undertrained_`` (None without validation or reference), and
    ``validation_rows_`` (the held-out rows of the member and of the non-member source). With
    ``validation_fraction=0`` the last epoch is kept.
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
        init: str = "default",
        standardise: str = "component",
        loss: str = "mse",
    ):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known: {LOSSES}")
        if standardise not in STANDARDISE:
            raise ValueError(f"unknown standardise {standardise!r}; known: {STANDARDISE}")
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.kernels = kernels
        self.patience = patience
        self.device = device
        self.seed = seed
        self.validation_fraction = validation_fraction
        self.on_epoch = on_epoch
        self.init = init
        self.standardise = standardise
        self.loss = loss

    def fit(
        self,
        members: FeatureSource,
        nonmembers: FeatureSource,
        reference: tuple[np.ndarray, np.ndarray] | None = None,
        classes: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> WhiteBoxAttack:
        import torch

        from .network import AttackNetwork

        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2, got {self.batch_size}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        for what, given in (("reference scores", reference), ("classes", classes)):
            if given is not None and tuple(map(len, given)) != (len(members), len(nonmembers)):
                raise ValueError(
                    f"{what} for {tuple(map(len, given))} records, the sources have "
                    f"{(len(members), len(nonmembers))}"
                )
        shapes = _common_shapes(members, nonmembers)
        rng = np.random.default_rng(self.seed)
        member_train, member_val = _split(len(members), self.validation_fraction, rng)
        nonmember_train, nonmember_val = _split(len(nonmembers), self.validation_fraction, rng)
        self.validation_rows_ = (member_val, nonmember_val)
        validating = self.validation_fraction > 0
        weights = None
        if classes is not None:
            weights = class_balance_weights(
                np.asarray(classes[0])[member_train], np.asarray(classes[1])[nonmember_train]
            )
        self.reference_val_auc_ = None
        if reference is not None and validating:
            self.reference_val_auc_ = auc(
                np.asarray(reference[0], dtype=np.float64)[member_val],
                np.asarray(reference[1], dtype=np.float64)[nonmember_val],
            )

        with seeded(self.seed, self.device):
            self.network_ = AttackNetwork(shapes, kernels=self.kernels, init=self.init)
            if self.standardise != "none":
                train_parts = [(members, member_train), (nonmembers, nonmember_train)]
                self.network_.set_standardisation(
                    standardisation(train_parts, per=self.standardise)
                )
            self.network_.to(self.device)
            optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr, eps=ADAM_EPS)
            self.history_: list[dict] = []
            best_auc, best_state, self.best_epoch_ = -1.0, None, 0
            for epoch in range(1, self.epochs + 1):
                steps = balanced_batches(
                    member_train, nonmember_train, self.batch_size // 2, rng, weights
                )
                train_loss, train_auc = self._train_epoch(optimizer, steps, members, nonmembers)
                record = {"epoch": epoch, "train_loss": train_loss, "train_auc": train_auc}
                if validating:
                    m = self._logits(members, member_val)
                    n = self._logits(nonmembers, nonmember_val)
                    record.update(
                        val_loss=self._balanced_loss(m, n),
                        val_auc=auc(m, n),
                        val_accuracy=balanced_accuracy(sigmoid(m), sigmoid(n)),
                    )
                self.history_.append(record)
                if self.on_epoch is not None:
                    self.on_epoch(record)
                if not validating:
                    self.best_epoch_ = epoch
                elif record["val_auc"] > best_auc:
                    best_auc, self.best_epoch_ = record["val_auc"], epoch
                    best_state = copy.deepcopy(self.network_.state_dict())
                elif self.patience is not None and epoch - self.best_epoch_ >= self.patience:
                    break
            if best_state is not None:
                self.network_.load_state_dict(best_state)
        self.network_.eval()
        self.val_auc_ = best_auc if validating else None
        self.undertrained_ = (
            None if self.reference_val_auc_ is None else bool(best_auc < self.reference_val_auc_)
        )
        return self

    def _criterion(self, logits: Tensor, target: Tensor) -> Tensor:
        import torch
        from torch import nn

        if self.loss == "bce":
            return nn.functional.binary_cross_entropy_with_logits(logits, target)
        return nn.functional.mse_loss(torch.sigmoid(logits), target)

    def _balanced_loss(self, member_logits: np.ndarray, nonmember_logits: np.ndarray) -> float:
        """The training criterion on held-out logits, the mean of the two sides' means."""
        import torch

        sides = [(member_logits, 1.0), (nonmember_logits, 0.0)]
        losses = [
            self._criterion(torch.as_tensor(z), torch.full((len(z),), t, dtype=torch.float64))
            for z, t in sides
        ]
        return float(sum(losses) / 2)

    def _train_epoch(
        self,
        optimizer: torch.optim.Optimizer,
        steps: Iterator[tuple[np.ndarray, np.ndarray]],
        members: FeatureSource,
        nonmembers: FeatureSource,
    ) -> tuple[float, float]:
        """One pass of balanced steps; returns the mean criterion over the steps and the AUC of
        the logits the steps produced (members against non-members)."""
        import torch

        self.network_.train()
        losses, member_logits, nonmember_logits = [], [], []
        for member_rows, nonmember_rows in steps:
            # Sorted rows: cheaper reads from a memory-mapped source; order within a half is moot.
            m = members.take(np.sort(member_rows))
            n = nonmembers.take(np.sort(nonmember_rows))
            batch = to_device({name: torch.cat([m[name], n[name]]) for name in m}, self.device)
            target = torch.cat([torch.ones(len(member_rows)), torch.zeros(len(nonmember_rows))])
            logits = self.network_(batch)
            loss = self._criterion(logits, target.to(logits.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            z = logits.detach().double().cpu().numpy()
            member_logits.append(z[: len(member_rows)])
            nonmember_logits.append(z[len(member_rows) :])
        return float(np.mean(losses)), auc(
            np.concatenate(member_logits), np.concatenate(nonmember_logits)
        )

    def _accuracy(self, members, nonmembers, member_rows=None, nonmember_rows=None) -> float:
        return balanced_accuracy(
            self._probabilities(members, member_rows),
            self._probabilities(nonmembers, nonmember_rows),
        )

    def _logits(self, source: FeatureSource, rows: np.ndarray | None) -> np.ndarray:
        self.network_.eval()
        return network_outputs(self.network_, source, rows, self.batch_size, self.device)

    def _probabilities(self, source: FeatureSource, rows: np.ndarray | None) -> np.ndarray:
        return sigmoid(self._logits(source, rows))

    def decision_function(self, source: FeatureSource) -> np.ndarray:
        """The membership logit of each record of ``source``, in source order, as float64: the
        attack's score (its sigmoid, :meth:`predict_proba`, rounds to ties near 0 and 1)."""
        return self._logits(source, None)

    def predict_proba(self, source: FeatureSource) -> np.ndarray:
        """Pr{member} for each record of ``source``, in source order (float64 sigmoid of the
        float64 logit)."""
        return self._probabilities(source, None)

    def predict(self, source: FeatureSource) -> np.ndarray:
        """1 (member) where Pr{member} >= 0.5 (the logit >= 0), else 0."""
        return (self.decision_function(source) >= 0).astype(np.int64)

    def score(self, members: FeatureSource, nonmembers: FeatureSource) -> float:
        """Balanced accuracy on these members and non-members (see :func:`balanced_accuracy`)."""
        return self._accuracy(members, nonmembers)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function in float64, without overflow warnings for large negative logits."""
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


# --- registered attacks: the attack network on white-box, output-layer or black-box features --


@register("whitebox", knowledge="supervised", reads_features=True,
          description="Nasr et al.: the attack network on attack.features (per-layer gradients, "
          "output, loss, label) over the observed snapshots, trained on known members")
def run_whitebox(ctx) -> AttackOutcome:
    return ctx.supervised("whitebox", ctx.spec)


@register("whitebox-outputs", knowledge="supervised",
          description="the attack network on every layer's activations, output, loss and label "
          "(no gradients)")
def run_whitebox_outputs(ctx) -> AttackOutcome:
    from fedattack.features import FeatureSpec

    spec = FeatureSpec.all_activations(ctx.obs.models[0], ctx.spec.output_scale)
    return ctx.supervised("whitebox-outputs", spec)


@register("blackbox", knowledge="supervised",
          description="the same attack network on the prediction vector and the label only")
def run_blackbox(ctx) -> AttackOutcome:
    from fedattack.features import FeatureSpec

    return ctx.supervised("blackbox", FeatureSpec.black_box(ctx.spec.output_scale))
