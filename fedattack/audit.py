"""Auditing DP: the empirical epsilon lower bound an attack's ROC implies (Jagielski et al. 2020,
"Auditing differentially private machine learning"; Nasr et al. 2021, "Adversary instantiation").

A mechanism that is (epsilon, delta)-DP bounds every membership test's error rates: for every
threshold, ``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``. An attack
that reaches TPR and FPR on a finite evaluation therefore shows

    eps >= max( log((TPR - delta) / FPR),  log((1 - FPR - delta) / (1 - TPR)) ),

with TPR replaced by its one-sided Clopper-Pearson lower bound and FPR by its upper bound at
`confidence` (95%: each bound holds with probability 0.95, both together with at least 0.90), so
that the figure is a lower bound with that confidence and not the luck of one evaluation set. The
bound is maximised over the attack's thresholds (every distinct score); it is 0 where no
threshold implies a positive epsilon. As in the auditing literature, choosing the threshold on the
same evaluation set makes the figure optimistic by the maximisation; with a few hundred targets
it is an audit of the attack, not a proof the accountant is wrong unless it exceeds its epsilon.

The membership game here is the testbed's (members against held-out records of a participant's
partition), so the bound speaks of the per-record guarantee the accountant gives each
participant's records; one record per target, members and non-members drawn independently.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

CONFIDENCE = 0.95


def clopper_pearson_lower(k, n, confidence: float = CONFIDENCE) -> np.ndarray:
    """One-sided lower bound on a binomial proportion from `k` successes in `n` trials."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore"):
        low = beta.ppf(alpha, k, n - k + 1)
    return np.where(k <= 0, 0.0, low)


def clopper_pearson_upper(k, n, confidence: float = CONFIDENCE) -> np.ndarray:
    """One-sided upper bound on a binomial proportion from `k` successes in `n` trials."""
    k, n = np.asarray(k, np.float64), np.asarray(n, np.float64)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore"):
        high = beta.ppf(1 - alpha, k + 1, n - k)
    return np.where(k >= n, 1.0, high)


def _log_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, -np.inf)
    ok = (numerator > 0) & (denominator > 0)
    out[ok] = np.log(numerator[ok] / denominator[ok])
    return out


def epsilon_lower_bound(labels, scores, delta: float,
                        confidence: float = CONFIDENCE) -> dict:
    """The empirical epsilon lower bound of one attack (`scores`, higher = member) on targets with
    membership `labels` (1 member, 0 non-member), at `delta`: the bound, and the threshold, TPR
    lower bound and FPR upper bound that attain it."""
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    s = np.asarray(scores, np.float64).reshape(-1)
    if y.shape != s.shape or not np.isfinite(s).all():
        raise ValueError("labels and scores must be equally long, scores finite")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    n_in, n_out = int((y == 1).sum()), int((y == 0).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError("auditing needs members and non-members among the targets")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]  # end of each tied block
    tp = np.r_[0, np.cumsum(y_sorted)[last]]  # predicted members: score >= threshold
    fp = np.r_[0, np.cumsum(1 - y_sorted)[last]]
    thresholds = np.r_[np.inf, s_sorted[last]]
    tpr_low = clopper_pearson_lower(tp, n_in, confidence)
    fpr_high = clopper_pearson_upper(fp, n_out, confidence)
    forward = _log_ratio(tpr_low - delta, fpr_high)
    backward = _log_ratio(1 - fpr_high - delta, 1 - tpr_low)
    bound = np.maximum(forward, backward)
    best = int(np.argmax(bound))
    return {"epsilon_lower_bound": max(0.0, float(bound[best])),
            "threshold": float(thresholds[best]), "tpr_lower": float(tpr_low[best]),
            "fpr_upper": float(fpr_high[best]), "confidence": confidence, "delta": delta}


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


def audit_fields(exp, labels, scores) -> dict:
    """The result fields of one attack on one victim under DP: the bound and what attains it
    ({} for a run without DP). Under two mechanisms the bound is taken at the larger delta
    (the smaller bound)."""
    if not audited(exp):
        return {}
    found = epsilon_lower_bound(labels, scores, max(dp_deltas(exp)))
    return {"epsilon_lower_bound": found.pop("epsilon_lower_bound"), "audit": found}


def mark_strongest(results: list[dict]) -> list[dict]:
    """Flag (``audit_strongest``) the row of each experiment whose attack implies the largest
    epsilon lower bound: the experiment's audit, reported beside the accountant's epsilon."""
    best: dict[str, dict] = {}
    for row in results:
        if row.get("epsilon_lower_bound") is None:
            continue
        held = best.get(row["experiment"])
        if held is None or row["epsilon_lower_bound"] > held["epsilon_lower_bound"]:
            best[row["experiment"]] = row
    for row in best.values():
        row["audit_strongest"] = True
    return results


def summary_lines(results) -> list[str]:
    """One line per audited experiment for results.md."""
    lines = []
    for row in results:
        if row.get("audit_strongest"):
            a = row["audit"]
            eps = row.get("epsilon")
            lines.append(
                f"DP audit of {row['experiment']}: accountant epsilon "
                f"{'–' if eps is None else f'{eps:.2f}'} at delta {a['delta']:g}; the strongest "
                f"attack, {row['attack']} on {row['victim']}, implies epsilon >= "
                f"{row['epsilon_lower_bound']:.2f} (TPR >= {a['tpr_lower']:.3f}, FPR <= "
                f"{a['fpr_upper']:.3f}, one-sided Clopper-Pearson at "
                f"{a['confidence'] * 100:.0f}% each).")
    return lines
