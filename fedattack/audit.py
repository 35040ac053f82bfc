"""Auditing DP: the empirical epsilon lower bound an attack implies (Jagielski et al. 2020,
"Auditing differentially private machine learning"; Nasr et al. 2021, "Adversary instantiation").

A mechanism that is (epsilon, delta)-DP bounds every membership test's error rates: for every
threshold, ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``. A test that
reaches TPR and FPR therefore shows

    eps >= max( log((TPR - delta) / FPR),  log((1 - FPR - delta) / (1 - TPR)) ),

and with TPR replaced by a lower confidence bound and FPR by an upper one, both holding together
with probability 95%, the epsilon implied is a lower bound at 95% confidence; but only for a test
fixed before the records it is measured on were looked at. So, as in the auditing literature,
the test is chosen on one part of the targets and bounded on the other: each victim's targets
are split in two seeded, balanced halves (:func:`fedattack.metrics.target_halves`, the halves
the strongest attack is chosen on too).

* On the selection half, the threshold is the one whose bound there is largest (every distinct
  score is tried; :func:`epsilon_lower_bound`). That maximum is no valid bound: it only chooses.
* On the report half, at that one threshold, TPR is replaced by its one-sided Clopper-Pearson
  lower bound and FPR by its upper bound, each at 97.5%, so that both hold together with
  probability at least 95% (a union bound): the row's ``epsilon_lower_bound`` is a lower bound
  on epsilon at 95% confidence (:func:`bound_at`).
* The experiment's audit (the row flagged ``audit_strongest``, the line in results.md) is the
  attack and victim whose selection-half bound is largest, stated with its report-half bound.
  Each row's bound holds at 95% on its own; the largest of them, picked afterwards, does not.

The price of validity is half the targets: the bound is weaker than the maximum over thresholds
on all targets, which is optimistic by that maximisation (under no signal at all it exceeds 0
in some evaluations; the bound here does so in at most 5%). The membership game is the
testbed's (members against held-out records of a participant's partition), so the bound speaks
of the per-record guarantee the accountant gives each participant's records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedattack.metrics import TargetHalves
from fedattack.records import Mean, declared

CONFIDENCE = 0.95


def clopper_pearson_lower(k, n, confidence: float = CONFIDENCE) -> np.ndarray:
    """One-sided lower bound on a binomial proportion from `k` successes in `n` trials."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    alpha = 1 - confidence
    from scipy.stats import beta  # imported when used: loading a campaign (cli) stays cheap

    with np.errstate(invalid="ignore"):
        low = beta.ppf(alpha, k, n - k + 1)
    return np.where(k <= 0, 0.0, low)


def clopper_pearson_upper(k, n, confidence: float = CONFIDENCE) -> np.ndarray:
    """One-sided upper bound on a binomial proportion from `k` successes in `n` trials."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    alpha = 1 - confidence
    from scipy.stats import beta

    with np.errstate(invalid="ignore"):
        high = beta.ppf(1 - alpha, k + 1, n - k)
    return np.where(k >= n, 1.0, high)


def _log_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, -np.inf)
    ok = (numerator > 0) & (denominator > 0)
    out[ok] = np.log(numerator[ok] / denominator[ok])
    return out


def _checked(labels, scores, delta: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    if y.shape != s.shape or not np.isfinite(s).all():
        raise ValueError("labels and scores must be equally long, scores finite")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    n_in, n_out = int((y == 1).sum()), int((y == 0).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError("auditing needs members and non-members among the targets")
    return y, s, n_in, n_out


def _implied(tp, fp, n_in: int, n_out: int, delta: float, confidence: float) -> tuple:
    """(bound, TPR lower bound, FPR upper bound) of the tests with `tp` true and `fp` false
    positives, each rate's bound one-sided at (1 + confidence) / 2 so both hold at
    `confidence`; the bound is -inf where neither inequality implies a positive epsilon."""
    each = (1 + confidence) / 2
    tpr_low = clopper_pearson_lower(tp, n_in, each)
    fpr_high = clopper_pearson_upper(fp, n_out, each)
    bound = np.maximum(_log_ratio(tpr_low - delta, fpr_high),
                       _log_ratio(1 - fpr_high - delta, 1 - tpr_low))
    return bound, tpr_low, fpr_high


def epsilon_lower_bound(labels, scores, delta: float,
                        confidence: float = CONFIDENCE) -> dict:
    """The largest epsilon bound over the thresholds of `scores` (higher = member) on targets
    with membership `labels` (1 member, 0 non-member), at `delta`: the bound, and the threshold,
    TPR lower bound and FPR upper bound that attain it. The maximum over thresholds is chosen on
    these very targets, so it is what the selection half chooses by, not a valid bound."""
    y, s, n_in, n_out = _checked(labels, scores, delta)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]  # end of each tied block
    tp = np.r_[0, np.cumsum(y_sorted)[last]]  # predicted members: score >= threshold
    fp = np.r_[0, np.cumsum(1 - y_sorted)[last]]
    thresholds = np.r_[np.inf, s_sorted[last]]
    bound, tpr_low, fpr_high = _implied(tp, fp, n_in, n_out, delta, confidence)
    best = int(np.argmax(bound))
    return {"epsilon_lower_bound": max(0.0, float(bound[best])),
            "threshold": float(thresholds[best]), "tpr_lower": float(tpr_low[best]),
            "fpr_upper": float(fpr_high[best]), "confidence": confidence, "delta": delta}


def bound_at(labels, scores, threshold: float, delta: float,
             confidence: float = CONFIDENCE) -> dict:
    """The epsilon lower bound of the one test ``score >= threshold``, fixed beforehand, on
    targets with membership `labels`: valid at `confidence`."""
    y, s, n_in, n_out = _checked(labels, scores, delta)
    predicted = s >= threshold
    tp, fp = int((predicted & (y == 1)).sum()), int((predicted & (y == 0)).sum())
    bound, tpr_low, fpr_high = _implied(np.array([tp]), np.array([fp]), n_in, n_out, delta,
                                        confidence)
    return {"epsilon_lower_bound": max(0.0, float(bound[0])), "tpr_lower": float(tpr_low[0]),
            "fpr_upper": float(fpr_high[0]), "n_members": n_in, "n_nonmembers": n_out}


@dataclass(frozen=True)
class Audit:
    """How one attack on one victim bounds epsilon: the threshold chosen on the selection half
    (with the bound it reached there), and the TPR and FPR bounds on the report half at it."""

    threshold: float = declared(Mean.PER_VICTIM)  # a score: never rounded
    selection_bound: float = declared(Mean.PER_VICTIM, figure=True)
    tpr_lower: float = declared(Mean.PER_VICTIM, figure=True)
    fpr_upper: float = declared(Mean.PER_VICTIM, figure=True)
    n_members: int = declared(Mean.PER_VICTIM)  # the report half's
    n_nonmembers: int = declared(Mean.PER_VICTIM)
    confidence: float = declared(Mean.PER_VICTIM)  # of the bound: both rates' bounds together
    delta: float = declared(Mean.PER_VICTIM)


def audit_targets(labels, scores, halves: TargetHalves, delta: float,
                  confidence: float = CONFIDENCE) -> tuple[float, Audit]:
    """The valid epsilon lower bound of one attack: its threshold chosen on the selection half,
    the bound taken on the report half (see the module docstring)."""
    y, s = np.asarray(labels), np.asarray(scores, np.float64)
    chosen = epsilon_lower_bound(y[halves.select], s[halves.select], delta, confidence)
    held = bound_at(y[halves.report], s[halves.report], chosen["threshold"], delta, confidence)
    return held["epsilon_lower_bound"], Audit(
        chosen["threshold"], chosen["epsilon_lower_bound"], held["tpr_lower"],
        held["fpr_upper"], held["n_members"], held["n_nonmembers"], confidence, delta)


def dp_deltas(exp) -> list[float]:
    """The delta of each DP mechanism `exp` runs under: DP-SGD of the honest participants,
    client-level DP of the federation."""
    deltas = []
    privacy = getattr(exp, "privacy", None)
    if privacy is not None and privacy.noise_multiplier is not None:
        deltas.append(privacy.delta)
    dp = getattr(getattr(exp, "federation", None), "client_dp", None)
    if dp is not None:
        deltas.append(dp.delta)
    return deltas


def audited(exp) -> bool:
    """Whether `exp` runs under a DP defence (DP-SGD, client-level DP)."""
    return bool(dp_deltas(exp))


def audit_fields(exp, labels, scores, halves: TargetHalves) -> dict:
    """The result fields of one attack on one victim under DP: the bound and how it was found
    ({} for a run without DP). Under two mechanisms the bound is taken at the larger delta
    (the smaller bound)."""
    if not audited(exp):
        return {}
    bound, found = audit_targets(labels, scores, halves, max(dp_deltas(exp)))
    return {"epsilon_lower_bound": bound, "audit": found}


def mark_strongest(results: list) -> list:
    """Flag (``audit_strongest``) the row of each experiment whose attack reached the largest
    bound on the selection half: the experiment's audit, reported (with its report-half bound)
    beside the accountant's epsilon. The report-half bounds are never compared."""
    best: dict[str, int] = {}
    for i, row in enumerate(results):
        if row.get("audit") is None:
            continue
        held = best.get(row["experiment"])
        if held is None or (row["audit"]["selection_bound"]
                            > results[held]["audit"]["selection_bound"]):
            best[row["experiment"]] = i
    chosen = set(best.values())
    return [row.annotated({"audit_strongest": True}) if i in chosen else row
            for i, row in enumerate(results)]


def summary_lines(results) -> list[str]:
    """One line per audited experiment for results.md."""
    lines = []
    for row in results:
        if row.get("audit_strongest"):
            a = row["audit"]
            eps = row.get("epsilon")
            lines.append(
                f"DP audit of {row['experiment']}: accountant epsilon "
                f"{'–' if eps is None else f'{eps:.2f}'} at delta {a['delta']:g}; the attack "
                f"with the largest bound on the selection half of the targets "
                f"({a['selection_bound']:.2f}), {row['attack']} on {row['victim']}, implies "
                f"epsilon >= {row['epsilon_lower_bound']:.2f} on the other half "
                f"({a['n_members']} + {a['n_nonmembers']} targets, at its threshold chosen "
                f"there: TPR >= {a['tpr_lower']:.3f}, FPR <= {a['fpr_upper']:.3f}; "
                f"Clopper-Pearson, {a['confidence'] * 100:.0f}% for both together).")
    return lines
