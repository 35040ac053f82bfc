"""Black-box threshold baselines on per-record summaries: loss, confidence, logit-scaled
confidence, prediction entropy.

Summaries are dicts of per-record arrays (those of ``FeatureExtractor.scalar_summaries``), each
(N,) or (N, T) over T model snapshots; a baseline uses the last snapshot, the model an outside
observer would query. Scores are float64 and oriented so that members score higher: -loss, the
confidence on the true label, its logit ``log(p / (1 - p))`` (the statistic LiRA thresholds,
Carlini et al. 2022, computed from the logits so that it does not saturate), -entropy.
"""

from __future__ import annotations

import numpy as np

from fedattack.attack_registry import register

from .whitebox import balanced_accuracy

ORIENTATION = {"loss": -1.0, "confidence": 1.0, "logit-confidence": 1.0, "entropy": -1.0}
KINDS = tuple(ORIENTATION)
SUMMARY = {kind: kind.replace("-", "_") for kind in KINDS}
"""The summary each kind reads: ``logit-confidence`` reads ``logit_confidence``."""


def last_snapshot(values: np.ndarray) -> np.ndarray:
    """(N,) from an (N,) or (N, T) array: the last of the T snapshots."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        return values[:, -1]
    if values.ndim != 1:
        raise ValueError(f"a summary must be (N,) or (N, T), got shape {values.shape}")
    return values


def threshold_scores(summaries: dict[str, np.ndarray], kind: str) -> np.ndarray:
    """Membership scores from one summary, higher for likelier members (last snapshot if (N, T))."""
    _check_kind(kind)
    key = SUMMARY[kind]
    if key not in summaries:
        raise KeyError(f"the summaries have no {key!r} (they have {sorted(summaries)})")
    return ORIENTATION[kind] * last_snapshot(summaries[key])


def _check_kind(kind: str) -> None:
    if kind not in ORIENTATION:
        raise ValueError(f"unknown threshold attack kind {kind!r}; known: {KINDS}")


def best_threshold(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """The threshold t (member iff score >= t) with the best balanced accuracy on these scores.

    Candidates are the midpoints between consecutive distinct scores, and -inf and +inf (everyone
    a member, no one a member); the first best, i.e. the lowest threshold, wins ties.
    """
    values = np.unique(np.concatenate([member_scores, nonmember_scores]))
    candidates = np.concatenate([[-np.inf], (values[:-1] + values[1:]) / 2, [np.inf]])
    members = np.sort(member_scores)
    nonmembers = np.sort(nonmember_scores)
    # Fraction of each side with score < t, for every candidate t at once.
    below_m = np.searchsorted(members, candidates, side="left") / len(members)
    below_n = np.searchsorted(nonmembers, candidates, side="left") / len(nonmembers)
    accuracy = ((1 - below_m) + below_n) / 2
    return float(candidates[np.argmax(accuracy)])


class ThresholdAttack:
    """Predicts "member" when a summary's oriented score reaches a threshold fitted on known data.

    ``fit`` picks the threshold maximising accuracy on the attacker's known members and
    non-members (balanced accuracy, as :class:`~fedattack.attacks.WhiteBoxAttack` picks its best
    epoch; the plain accuracy when both sides are the same size). After fit: ``threshold_``.
    """

    def __init__(self, kind: str):
        _check_kind(kind)
        self.kind = kind

    def fit(
        self, member_summaries: dict[str, np.ndarray], nonmember_summaries: dict[str, np.ndarray]
    ) -> ThresholdAttack:
        members = threshold_scores(member_summaries, self.kind)
        nonmembers = threshold_scores(nonmember_summaries, self.kind)
        if len(members) == 0 or len(nonmembers) == 0:
            raise ValueError("fitting a threshold needs at least one member and one non-member")
        self.threshold_ = best_threshold(members, nonmembers)
        return self

    def predict_proba(self, summaries: dict[str, np.ndarray]) -> np.ndarray:
        """The oriented score (not a probability; higher = likelier member), for ROC and AUC."""
        return threshold_scores(summaries, self.kind)

    def predict(self, summaries: dict[str, np.ndarray]) -> np.ndarray:
        """1 (member) where the score is at least ``threshold_``, else 0."""
        return (self.predict_proba(summaries) >= self.threshold_).astype(np.int64)

    def score(
        self, member_summaries: dict[str, np.ndarray], nonmember_summaries: dict[str, np.ndarray]
    ) -> float:
        """Balanced accuracy of :meth:`predict` on the given members and non-members."""
        return balanced_accuracy(self.predict(member_summaries), self.predict(nonmember_summaries))


# --- registered attacks: one threshold per summary ---------------------------------------------


def _registered(kind: str, description: str) -> None:
    register(f"threshold-{kind}", knowledge="supervised", description=description)(
        lambda ctx: ctx.threshold(kind))


_registered("loss", "-loss at the last snapshot, thresholded on the known records")
_registered("confidence", "the true class's probability, thresholded on the known records")
_registered("logit-confidence", "log(p / (1 - p)) of the true class, from the logits (LiRA's "
            "statistic), thresholded on the known records")
_registered("entropy", "-entropy of the prediction vector, thresholded on the known records")
