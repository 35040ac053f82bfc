"""LiRA, the likelihood-ratio attack of Carlini et al. (IEEE S&P 2022), scoring only.

The signal of a model on a record (x, y) is the logit-scaled confidence of the true class,
``phi = log(p_y / (1 - p_y))``, computed from the logits as ``z_y - logsumexp(z_j, j != y)`` so
that it stays finite where ``p_y`` rounds to 0 or 1 (:func:`logit_confidence`).

For each target record the attacker has the target model's signal ``t`` and the signals of K
reference models, each of which did (IN) or did not (OUT) train on the record.

* Offline (:func:`lira_offline`, the references never trained on the targets): fit a Gaussian
  N(mu_out, sigma_out^2) to the OUT signals and score the one-sided test
  ``1 - Pr[Z > t]``; we return its monotone transform ``-log Pr[Z > t]``, which orders the
  targets the same way but keeps resolution where ``Pr[Z > t]`` underflows.
* Online (:func:`lira_online`, each target IN about half of the references): Gaussians to the IN
  and to the OUT signals, score ``log N(t; mu_in, sigma_in) - log N(t; mu_out, sigma_out)``.

Variance ``"per-example"`` is each record's own (population) standard deviation over its
references; ``"global"`` one variance shared by all records, the mean over records of their
per-example variances (the pooled within-record variance; Carlini et al. recommend it when the
references are few, under 64).
"""

from __future__ import annotations

import numpy as np

from fedattack.attack_registry import AttackOutcome, register

VARIANCES = ("per-example", "global")
MIN_STD = 1e-6  # floor on a fitted standard deviation (identical reference signals)


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log(p_y / (1 - p_y))`` of the true class, in float64, from (..., N, C) logits."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if z.shape[-2] != y.shape[0]:
        raise ValueError(f"{z.shape[-2]} rows of logits for {y.shape[0]} labels")
    rows = np.arange(y.shape[0])
    true = z[..., rows, y]
    others = z.copy()
    others[..., rows, y] = -np.inf
    top = others.max(axis=-1)
    rest = top + np.log(np.exp(others - top[..., None]).sum(axis=-1))
    return true - rest


def _check_variance(variance: str) -> None:
    if variance not in VARIANCES:
        raise ValueError(f"unknown LiRA variance {variance!r}; accepted: {', '.join(VARIANCES)}")


def gaussian_fit(signals: np.ndarray, mask: np.ndarray, variance: str,
                 what: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per record of the masked entries of (N, K) `signals`."""
    _check_variance(variance)
    s = np.asarray(signals, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    count = m.sum(axis=1)
    least = 2 if variance == "per-example" else 1
    if (count < least).any():
        raise ValueError(f"LiRA needs at least {least} {what} reference signal(s) per record; "
                         f"{int((count < least).sum())} record(s) have fewer")
    mean = np.where(m, s, 0.0).sum(axis=1) / count
    var = np.where(m, (s - mean[:, None]) ** 2, 0.0).sum(axis=1) / count
    if variance == "global":
        var = np.full_like(var, var.mean())
    return mean, np.maximum(np.sqrt(var), MIN_STD)


def _as_table(target: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    r = np.asarray(references, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != t.shape[0]:
        raise ValueError(f"reference signals must be (N={t.shape[0]}, K), got {r.shape}")
    return t, r


def lira_offline(target: np.ndarray, out: np.ndarray, variance: str = "global",
                 out_mask: np.ndarray | None = None) -> np.ndarray:
    """Offline LiRA scores (higher = likelier member): ``-log Pr[Z > t]``, Z ~ N(mu_out, s_out).

    `target` (N,) the target model's signals; `out` (N, K) the references' signals, all OUT
    unless `out_mask` says which are."""
    t, r = _as_table(target, out)
    mask = np.ones(r.shape, bool) if out_mask is None else np.asarray(out_mask, bool)
    mu, sigma = gaussian_fit(r, mask, variance, "OUT")
    from scipy.special import log_ndtr  # imported when used: registering stays cheap

    return -log_ndtr(-(t - mu) / sigma)


def _log_normal(t: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -0.5 * ((t - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)


def lira_online(target: np.ndarray, references: np.ndarray, in_mask: np.ndarray,
                variance: str = "global") -> np.ndarray:
    """Online LiRA scores: the log likelihood ratio of `target` (N,) under the IN and OUT
    Gaussians of `references` (N, K); `in_mask` (N, K) is True where a reference trained on
    the record."""
    t, r = _as_table(target, references)
    m = np.asarray(in_mask, dtype=bool)
    if m.shape != r.shape:
        raise ValueError(f"in_mask {m.shape} does not match the references {r.shape}")
    mu_in, s_in = gaussian_fit(r, m, variance, "IN")
    mu_out, s_out = gaussian_fit(r, ~m, variance, "OUT")
    return _log_normal(t, mu_in, s_in) - _log_normal(t, mu_out, s_out)


# --- registered attacks -------------------------------------------------------------------------


@register("lira-offline", knowledge="reference",
          description="Carlini et al.: Gaussian likelihood of the logit-confidence under OUT "
          "reference models that never saw the targets")
def run_lira_offline(ctx) -> AttackOutcome:
    return ctx.reference("lira-offline")


@register("lira-online", knowledge="reference",
          description="Carlini et al.: likelihood ratio of IN and OUT reference models, each "
          "target in half of them")
def run_lira_online(ctx) -> AttackOutcome:
    return ctx.reference("lira-online")
