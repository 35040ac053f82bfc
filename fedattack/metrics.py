"""Membership-inference metrics: attack accuracy, TPR/FPR, ROC, AUC, TPR at a fixed low FPR,
each with a 95% bootstrap interval.

Conventions throughout: ``labels`` are 1 for members and 0 for non-members; ``scores`` are higher
for records more likely to be members; a record is predicted a member when its score is at least
the threshold (``score >= threshold``, as in the ROC curve below).

The headline number is the attack accuracy at a fixed threshold on a balanced evaluation set, as
in Nasr et al.; it is always reported beside AUC and TPR at 0.1% and 1% FPR (DESIGN.md, "Rules that
keep results honest"). The best accuracy over all thresholds peeks at the evaluation labels, so it
is reported separately and never as the headline.

What an evaluation can resolve. A TPR at a fixed FPR ``f`` is reported only where the evaluation
has at least five non-members per ``1/f`` (``n_nonmembers * f >= 5``, :data:`MIN_FALSE_POSITIVES`):
then the threshold admits at least five false positives and the figure is a point of the ROC, not
the TPR at zero false positives. Otherwise it is ``None`` (null in results.json), and the record
gives ``min_resolvable_fpr = 5 / n_nonmembers``, the smallest FPR it could resolve.

Intervals. The attack accuracy, the AUC and every resolved TPR at FPR carry a 95% percentile
interval from a stratified bootstrap over the targets: members and non-members are resampled
separately, with replacement, so every resample keeps the evaluation's balance. The resamples
are drawn from the experiment's seed (the same seed gives the same interval) and computed for
all resamples at once (1,000 resamples of 2,000 targets take a few tens of milliseconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fedattack.records import Mean, declared, to_json

MIN_FALSE_POSITIVES = 5  # a TPR at FPR f is resolved when n_nonmembers * f >= this
FIXED_FPRS = {"tpr_at_0.1pct_fpr": 0.001, "tpr_at_1pct_fpr": 0.01}
BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95
_BOOTSTRAP_STREAM = 0x5EED_B007  # mixed with the experiment seed: its own random stream

Interval = tuple[float, float]


def min_resolvable_fpr(n_nonmembers: int) -> float:
    """The smallest FPR a TPR can be reported at with ``n_nonmembers`` non-members."""
    return MIN_FALSE_POSITIVES / n_nonmembers


def resolvable(n_nonmembers: int, target_fpr: float) -> bool:
    """Whether ``n_nonmembers`` non-members resolve a TPR at ``target_fpr``:
    ``n_nonmembers * target_fpr >= 5`` (up to rounding, so 500 resolve 1%)."""
    return n_nonmembers * target_fpr >= MIN_FALSE_POSITIVES * (1 - 1e-9)


@dataclass(frozen=True)
class AttackMetrics:
    """Every figure of one attack on one evaluation set (fields declared for the mean over victims
    and for results.json: fedattack.records)."""

    # at the given threshold (or the given predictions): the headline
    attack_accuracy: float = declared(Mean.AVERAGED, figure=True)
    auc: float = declared(Mean.AVERAGED, figure=True)
    tpr: float = declared(Mean.AVERAGED, figure=True)  # at that threshold
    fpr: float = declared(Mean.AVERAGED, figure=True)
    # the largest TPR among ROC points with FPR <= 0.001 (0.01); None where the non-members
    # cannot resolve that FPR (and in a mean, where any victim's cannot)
    tpr_at_0_1pct_fpr: float | None = declared(Mean.AVERAGED, figure=True,
                                               key="tpr_at_0.1pct_fpr")
    tpr_at_1pct_fpr: float | None = declared(Mean.AVERAGED, figure=True)
    best_accuracy: float = declared(Mean.AVERAGED, figure=True)  # max over thresholds: an upper
    # bound, never the headline
    n_members: int = declared(Mean.SUMMED)
    n_nonmembers: int = declared(Mean.SUMMED)
    min_resolvable_fpr: float = declared(Mean.LARGEST, figure=True, default=1.0)
    # 95% bootstrap intervals; None without resamples or for an unresolved TPR
    attack_accuracy_ci: Interval | None = declared(Mean.INTERVAL, figure=True, default=None,
                                                   of="attack_accuracy", load=tuple)
    auc_ci: Interval | None = declared(Mean.INTERVAL, figure=True, default=None, of="auc",
                                       load=tuple)
    tpr_at_0_1pct_fpr_ci: Interval | None = declared(
        Mean.INTERVAL, figure=True, default=None, key="tpr_at_0.1pct_fpr_ci",
        of="tpr_at_0.1pct_fpr", load=tuple)
    tpr_at_1pct_fpr_ci: Interval | None = declared(Mean.INTERVAL, figure=True, default=None,
                                                   of="tpr_at_1pct_fpr", load=tuple)
    ci_level: float = declared(Mean.SHARED, default=CI_LEVEL)
    bootstrap_resamples: int = declared(Mean.SHARED, default=0)
    # the resampled values themselves, by result key (averaging victims averages these)
    bootstrap: dict[str, np.ndarray] = declared(Mean.DRAWS, written=False, default_factory=dict,
                                                compare=False)

    def as_dict(self) -> dict[str, float | int | list[float] | None]:
        """The figures by results.json key, unrounded."""
        return to_json(self, round_figures=False)


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


def _max_false_positives(n_nonmembers: int, target_fpr: float) -> int:
    """The largest count k of false positives with ``k / n_nonmembers <= target_fpr``."""
    k = int(np.floor(target_fpr * n_nonmembers))
    while k + 1 <= n_nonmembers and (k + 1) / n_nonmembers <= target_fpr:
        k += 1
    while k > 0 and k / n_nonmembers > target_fpr:
        k -= 1
    return k


def _resample_counts(rng: np.random.Generator, resamples: int, n: int) -> np.ndarray:
    """(resamples, n) counts: how often each of n records is drawn in each resample of size n."""
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)


def weighted_metrics(member_scores: np.ndarray, nonmember_scores: np.ndarray,
                     member_weights: np.ndarray, nonmember_weights: np.ndarray,
                     target_fprs: Iterable[float]) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """AUC and TPR at each FPR of many weighted evaluation sets at once.

    Row ``b`` of the (B, n) integer weights counts how often each member (non-member) is in set
    ``b`` (all ones: the evaluation set itself). The AUC is the Mann-Whitney count of member /
    non-member pairs (ties count half), which equals the trapezoid area of the ROC; the TPR at
    FPR ``f`` is that of the lowest threshold letting in at most ``f * n`` non-members, as
    :func:`tpr_at_fpr` computes it. Returns ``(auc (B,), {f: tpr (B,)})``.
    """
    up_m = np.argsort(member_scores, kind="stable")
    up_n = np.argsort(nonmember_scores, kind="stable")
    return _sorted_weighted_metrics(
        member_scores[up_m], nonmember_scores[up_n],
        np.atleast_2d(member_weights)[:, up_m], np.atleast_2d(nonmember_weights)[:, up_n],
        target_fprs)


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """(B, n + 1) running sums of integer weights, starting at 0."""
    out = np.zeros((weights.shape[0], weights.shape[1] + 1), dtype=np.int64)
    np.cumsum(weights, axis=1, out=out[:, 1:])
    return out


def _sorted_weighted_metrics(members: np.ndarray, nonmembers: np.ndarray, wm: np.ndarray,
                             wn: np.ndarray, target_fprs: Iterable[float]
                             ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """:func:`weighted_metrics` for scores sorted ascending, weights in the same order."""
    wm, wn = wm.astype(np.int64, copy=False), wn.astype(np.int64, copy=False)
    n1, n0 = wm.sum(axis=1), wn.sum(axis=1)
    below = _cumulative(wn)  # below[:, i]: weight of the non-members before position i
    # AUC: each member counts the non-members below it, plus half those tied with it:
    # (below[lo] + below[hi]) / 2 with [lo, hi) the non-members tied with it.
    lo = np.searchsorted(nonmembers, members, side="left")
    hi = np.searchsorted(nonmembers, members, side="right")
    wins = np.einsum("ij,ij->i", wm, below[:, lo] + below[:, hi])
    auc_values = wins / (2.0 * n1 * n0)
    # TPR at FPR f: with k = floor(f * n) false positives allowed, let v be the highest
    # non-member score at which more than k non-members score at least v; every threshold above
    # v is allowed, none at or below it, so the TPR is the share of members scoring above v.
    members_below = _cumulative(wm)
    rows = np.arange(len(wm))
    tprs = {}
    for f in target_fprs:
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"target_fpr must be in [0, 1], got {f}")
        tpr = np.ones(len(wm))
        for b in rows:  # per row: a binary search on its running sum
            k = _max_false_positives(int(n0[b]), f)
            # above(i) = n0 - below[i] non-members at positions >= i; the largest i with
            # above(i) > k is the position of v
            i = int(np.searchsorted(below[b], n0[b] - k, side="left")) - 1
            if i >= 0:
                v = nonmembers[i]
                at_or_below = np.searchsorted(members, v, side="right")
                tpr[b] = (n1[b] - members_below[b, at_or_below]) / n1[b]
        tprs[f] = tpr
    return auc_values, tprs


def percentile_interval(samples: np.ndarray, level: float = CI_LEVEL) -> Interval:
    """The central ``level`` percentile interval of bootstrap samples."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_rng(seed: int | Sequence[int]) -> np.random.Generator:
    """The bootstrap's random stream for an experiment seed (independent of training's); a
    sequence such as (seed, victim number) gives each victim its own resamples."""
    parts = [int(seed)] if np.isscalar(seed) else [int(p) for p in seed]
    return np.random.default_rng([*parts, _BOOTSTRAP_STREAM])


def bootstrap_samples(y: np.ndarray, s: np.ndarray, correct: np.ndarray, resamples: int,
                      seed: int | Sequence[int],
                      target_fprs: Iterable[float]) -> dict[str, np.ndarray]:
    """Stratified bootstrap: attack accuracy, AUC and TPR at each FPR of each resample."""
    members = y == 1
    rng = bootstrap_rng(seed)
    # draw positions in the members (non-members) sorted by score: no reordering per resample
    up_m = np.flatnonzero(members)[np.argsort(s[members], kind="stable")]
    up_n = np.flatnonzero(~members)[np.argsort(s[~members], kind="stable")]
    wm = _resample_counts(rng, resamples, len(up_m))
    wn = _resample_counts(rng, resamples, len(up_n))
    auc_values, tprs = _sorted_weighted_metrics(s[up_m], s[up_n], wm, wn, target_fprs)
    right = wm @ correct[up_m] + wn @ correct[up_n]
    out = {"attack_accuracy": right / len(y), "auc": auc_values}
    out.update({f"tpr_at_{f}": t for f, t in tprs.items()})
    return out


def attack_metrics(
    labels, scores, threshold: float = 0.5, predictions: np.ndarray | None = None,
    seed: int | Sequence[int] = 0, resamples: int = BOOTSTRAP_RESAMPLES,
) -> AttackMetrics:
    """Every metric of one attack on one evaluation set, with 95% bootstrap intervals.

    ``predictions`` (0/1, e.g. cluster assignments of an unsupervised attack) replace
    ``scores >= threshold`` for the accuracy, TPR and FPR; ``scores`` still give the ROC.
    A TPR at FPR f is None unless ``n_nonmembers * f >= 5`` (see the module docstring). The
    intervals come from ``resamples`` stratified resamples drawn from ``seed``; 0 resamples:
    no intervals. Balance is not enforced here: call :func:`check_balanced` on the evaluation set.
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
    at = {key: _tpr_at(fpr, tpr, f) if resolvable(n_nonmembers, f) else None
          for key, f in FIXED_FPRS.items()}
    intervals: dict[str, Interval | None] = dict.fromkeys(("attack_accuracy", "auc", *at))
    samples: dict[str, np.ndarray] = {}
    if resamples > 0:
        resolved = {key: f for key, f in FIXED_FPRS.items() if at[key] is not None}
        drawn = bootstrap_samples(y, s, (predicted == y).astype(np.float64), resamples, seed,
                                  resolved.values())
        samples = {"attack_accuracy": drawn["attack_accuracy"], "auc": drawn["auc"],
                   **{key: drawn[f"tpr_at_{f}"] for key, f in resolved.items()}}
        intervals.update({key: percentile_interval(v) for key, v in samples.items()})
    return AttackMetrics(
        attack_accuracy=float((predicted == y).mean()),
        auc=_area(fpr, tpr),
        tpr=float(predicted[members].mean()),
        fpr=float(predicted[~members].mean()),
        tpr_at_0_1pct_fpr=at["tpr_at_0.1pct_fpr"],
        tpr_at_1pct_fpr=at["tpr_at_1pct_fpr"],
        best_accuracy=float(((tps + n_nonmembers - fps) / len(y)).max()),
        n_members=n_members,
        n_nonmembers=n_nonmembers,
        min_resolvable_fpr=min_resolvable_fpr(n_nonmembers),
        attack_accuracy_ci=intervals["attack_accuracy"],
        auc_ci=intervals["auc"],
        tpr_at_0_1pct_fpr_ci=intervals["tpr_at_0.1pct_fpr"],
        tpr_at_1pct_fpr_ci=intervals["tpr_at_1pct_fpr"],
        bootstrap_resamples=resamples,
        bootstrap=samples,
    )


SELECTION_FPR = 0.01  # the strongest attack is the one with the highest TPR here (or at the
# smallest FPR the selection half resolves, where that is larger), then the highest AUC
_HALVES_STREAM = 0x5E1EC7  # the split's random stream, mixed with the seed


@dataclass(frozen=True)
class TargetHalves:
    """Positions of a victim's targets in two balanced halves: choices (the strongest attack of
    an experiment, a DP audit's attack and threshold) are made on `select` alone, and the
    figures of what was chosen are reported on `report` alone."""

    select: np.ndarray
    report: np.ndarray


def target_halves(labels, seed: int | Sequence[int]) -> TargetHalves:
    """A seeded split of the targets into two halves, members and non-members each split in two
    (so both halves are balanced when the targets are): the same for every attack on a victim,
    drawn from `seed` (the experiment's seed and the victim's) on a stream of its own. The split
    reads the membership labels only to stratify; it never reads a score."""
    y = _binary(labels, "labels")
    parts = [int(seed)] if np.isscalar(seed) else [int(p) for p in seed]
    rng = np.random.default_rng([*parts, _HALVES_STREAM])
    members, nonmembers = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k = min(len(members), len(nonmembers)) // 2
    if k == 0:
        raise ValueError("splitting the targets in two needs at least 2 members and 2 "
                         "non-members")
    members, nonmembers = rng.permutation(members), rng.permutation(nonmembers)
    return TargetHalves(np.sort(np.r_[members[:k], nonmembers[:k]]),
                        np.sort(np.r_[members[k:], nonmembers[k:]]))


@dataclass(frozen=True)
class Selection:
    """What an attack scores on the selection half of the targets: the criterion the strongest
    attack is chosen by, never a reported figure."""

    fpr: float = declared(Mean.LARGEST, figure=True)  # SELECTION_FPR, or the smallest FPR the
    # half resolves where larger
    tpr: float = declared(Mean.AVERAGED, figure=True)  # the TPR at that FPR
    auc: float = declared(Mean.AVERAGED, figure=True)
    n_members: int = declared(Mean.SUMMED)
    n_nonmembers: int = declared(Mean.SUMMED)

    @property
    def criterion(self) -> tuple[float, float]:
        return self.tpr, self.auc


def selection_figures(labels, scores) -> Selection:
    """The selection criterion of one attack on the selection half (`labels`, `scores`)."""
    y, s = _labels_and_scores(labels, scores)
    n_members, n_nonmembers = int(y.sum()), int(len(y) - y.sum())
    fpr = min(1.0, max(SELECTION_FPR, min_resolvable_fpr(n_nonmembers)))
    roc_fpr, roc_tpr, _ = roc_curve(y, s)
    return Selection(fpr, _tpr_at(roc_fpr, roc_tpr, fpr), _area(roc_fpr, roc_tpr), n_members,
                     n_nonmembers)


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
