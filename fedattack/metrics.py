"""Membership-inference metrics: attack accuracy, TPR/FPR, ROC, AUC, TPR at a fixed low FPR.

Conventions throughout: ``labels`` are 1 for members and 0 for non-members; ``scores`` are higher
for records more likely to be members; a record is predicted a member when its score is at least
the threshold (``score >= threshold``, as in the ROC curve below).

The headline number is the attack accuracy at a fixed threshold on a balanced evaluation set, as
in Nasr et al.; it is always reported beside AUC and TPR at 0.1% and 1% FPR (DESIGN.md, "Rules that
keep results honest"). The best accuracy over all thresholds peeks at the evaluation labels, so it
is reported separately and never as the headline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttackMetrics:
    attack_accuracy: float  # at the given threshold (or the given predictions): the headline
    auc: float
    tpr: float  # at that threshold
    fpr: float
    tpr_at_0_1pct_fpr: float  # the largest TPR among ROC points with FPR <= 0.001
    tpr_at_1pct_fpr: float
    best_accuracy: float  # max over thresholds: an upper bound, never the headline
    n_members: int
    n_nonmembers: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "attack_accuracy": self.attack_accuracy,
            "auc": self.auc,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "tpr_at_0.1pct_fpr": self.tpr_at_0_1pct_fpr,
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "best_accuracy": self.best_accuracy,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
        }


def _binary(values, what: str) -> np.ndarray:
    """``values`` as a 1-d int array of 0s and 1s; ValueError otherwise."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be 1-d, got shape {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric 0/1, got dtype {array.dtype}")
    bad = ~np.isin(array, (0, 1))
    if bad.any():
        found = np.unique(array[bad])[:5].tolist()
        raise ValueError(f"{what} must be 0 (non-member) or 1 (member); found {found}")
    return array.astype(np.int64)


def _scores(values, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"scores must be 1-d, got shape {array.shape}")
    if len(array) != n:
        raise ValueError(f"labels and scores differ in length: {n} != {len(array)}")
    if np.isnan(array).any():
        raise ValueError(f"scores contain {int(np.isnan(array).sum())} NaN value(s)")
    return array


def _labels_and_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = _binary(labels, "labels")
    if len(y) == 0:
        raise ValueError("labels are empty")
    s = _scores(scores, len(y))
    if y.min() == y.max():
        raise ValueError("the ROC needs both members (1) and non-members (0) among the labels")
    return y, s


def _roc_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positives when predicting ``score >= t``, for every distinct score ``t``.

    Tied scores move together, so a tie between members and non-members is one diagonal step.
    The first point is the empty prediction (threshold +inf), as in scikit-learn.
    """
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return np.r_[0, fps], np.r_[0, tps], np.r_[np.inf, s[last_of_tie]]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)``: every point of the ROC, one per distinct score, plus (0, 0).

    Matches ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``: thresholds
    decrease, the first one is +inf.
    """
    y, s = _labels_and_scores(labels, scores)
    fps, tps, thresholds = _roc_counts(y, s)
    return fps / fps[-1], tps / tps[-1], thresholds


def auc(labels, scores) -> float:
    """Area under the ROC (trapezoids, so ties count half), equal to ``roc_auc_score``."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return _area(fpr, tpr)


def _area(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoid rule (``np.trapezoid`` is numpy >= 2 only)."""
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, target_fpr: float) -> float:
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    return float(tpr[fpr <= target_fpr].max(initial=0.0))


def tpr_at_fpr(labels, scores, target_fpr: float) -> float:
    """The largest TPR among ROC points with FPR <= ``target_fpr`` (no interpolation)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return _tpr_at(fpr, tpr, target_fpr)


def attack_metrics(
    labels, scores, threshold: float = 0.5, predictions: np.ndarray | None = None
) -> AttackMetrics:
    """Every metric of one attack on one evaluation set.

    ``predictions`` (0/1, e.g. cluster assignments of an unsupervised attack) replace
    ``scores >= threshold`` for the accuracy, TPR and FPR; ``scores`` still give the ROC.
    Balance is not enforced here: call :func:`check_balanced` on the evaluation set.
    """
    y, s = _labels_and_scores(labels, scores)
    if predictions is None:
        predicted = (s >= threshold).astype(np.int64)
    else:
        predicted = _binary(predictions, "predictions")
        if len(predicted) != len(y):
            raise ValueError(
                f"labels and predictions differ in length: {len(y)} != {len(predicted)}"
            )
    members = y == 1
    n_members, n_nonmembers = int(members.sum()), int((~members).sum())

    fps, tps, _ = _roc_counts(y, s)
    fpr, tpr = fps / n_nonmembers, tps / n_members
    return AttackMetrics(
        attack_accuracy=float((predicted == y).mean()),
        auc=_area(fpr, tpr),
        tpr=float(predicted[members].mean()),
        fpr=float(predicted[~members].mean()),
        tpr_at_0_1pct_fpr=_tpr_at(fpr, tpr, 0.001),
        tpr_at_1pct_fpr=_tpr_at(fpr, tpr, 0.01),
        best_accuracy=float(((tps + n_nonmembers - fps) / len(y)).max()),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
    )


def per_class_accuracy(labels, predictions, classes: Iterable[int]) -> dict[int, float]:
    """Attack accuracy over the target records of each class (Nasr et al., Fig. 2).

    ``classes[i]`` is the class label of target record ``i``; the result has one entry per class
    present, in increasing order.
    """
    y = _binary(labels, "labels")
    predicted = _binary(predictions, "predictions")
    c = np.asarray(classes)
    if c.ndim != 1 or c.dtype.kind not in "iu":
        raise ValueError(f"classes must be a 1-d array of integers, got {c.dtype} {c.shape}")
    if not len(y) == len(predicted) == len(c):
        raise ValueError(
            "labels, predictions and classes differ in length: "
            f"{len(y)}, {len(predicted)}, {len(c)}"
        )
    correct = predicted == y
    return {int(k): float(correct[c == k].mean()) for k in np.unique(c)}


def check_balanced(labels) -> None:
    """ValueError unless there are as many members as non-members, and some of each."""
    y = _binary(labels, "labels")
    n_members, n_nonmembers = int(y.sum()), int(len(y) - y.sum())
    if n_members == 0 or n_nonmembers == 0:
        raise ValueError(
            f"the evaluation set needs members and non-members, got {n_members} members and "
            f"{n_nonmembers} non-members"
        )
    if n_members != n_nonmembers:
        raise ValueError(
            f"the evaluation set is unbalanced: {n_members} members != {n_nonmembers} non-members"
        )
