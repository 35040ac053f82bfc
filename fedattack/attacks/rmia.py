"""RMIA, the robust membership inference attack of Zarifzadeh et al. (ICML 2024), scoring only.

The signal is ``Pr(x | theta)``, the model's softmax probability of the record's true class.
A record's likelihood ratio against the population is ``Pr(x | theta) / Pr(x)``, where ``Pr(x)``
is the average of ``Pr(x | theta')`` over reference models theta':

* online: over all references (about half of them trained on x);
* offline: only OUT references exist, and their average underestimates ``Pr(x)``; the paper's
  linear correction is ``Pr(x) = (1 + a) / 2 * mean_OUT + (1 - a) / 2`` (``a`` from 0 to 1;
  ``a = 1`` is the plain OUT average).

The score of x is the fraction of population records z (records of the population, not targets)
that x dominates: ``mean_z 1[(Pr(x|theta)/Pr(x)) / (Pr(z|theta)/Pr(z)) > gamma]``. The ``Pr(z)``
of a population record is computed the same way as ``Pr(x)``, from the references it is OUT of
(offline) or all of them (online).

`a` is chosen offline as the released code does (ml_privacy_meter's ``tune_offline_a``): attack
one reference model, whose training records are known, with the others (its paired complement
left out), and keep the ``a`` of the grid 0, 0.1, ..., 1 with the best AUC (:func:`tune_a`).
"""

from __future__ import annotations

import numpy as np

from fedattack.attack_registry import AttackOutcome, register

A_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def true_class_probability(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax probability of the true class, float64, from (..., N, C) logits."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return np.exp(log_p[..., np.arange(y.shape[0]), y])


def marginal(references: np.ndarray, in_mask: np.ndarray | None, a: float | None) -> np.ndarray:
    """``Pr(x)`` of each row of (N, K) reference probabilities: offline (`a` given) the
    a-corrected mean over the OUT entries (all entries when `in_mask` is None); online (`a`
    None) the mean over every entry."""
    r = np.asarray(references, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"reference probabilities must be (N, K), got {r.shape}")
    if a is None:
        return r.mean(axis=1)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"RMIA's offline a must lie in [0, 1], got {a}")
    out = np.ones(r.shape, bool) if in_mask is None else ~np.asarray(in_mask, bool)
    count = out.sum(axis=1)
    if (count == 0).any():
        raise ValueError(f"offline RMIA needs an OUT reference for every record; "
                         f"{int((count == 0).sum())} have none")
    mean_out = np.where(out, r, 0.0).sum(axis=1) / count
    return (1 + a) / 2 * mean_out + (1 - a) / 2


def dominance(ratio_x: np.ndarray, ratio_z: np.ndarray, gamma: float) -> np.ndarray:
    """For each x, the fraction of z with ``ratio_x / ratio_z > gamma`` (ratios are > 0)."""
    if gamma <= 0:
        raise ValueError(f"RMIA's gamma must be positive, got {gamma}")
    rz = np.sort(np.asarray(ratio_z, dtype=np.float64))
    if rz.size == 0:
        raise ValueError("RMIA needs at least one population record z")
    # ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma
    return np.searchsorted(rz, np.asarray(ratio_x, np.float64) / gamma, side="left") / rz.size


def rmia_scores(target_x: np.ndarray, refs_x: np.ndarray, target_z: np.ndarray,
                refs_z: np.ndarray, gamma: float = 2.0, a: float | None = None,
                in_x: np.ndarray | None = None, in_z: np.ndarray | None = None) -> np.ndarray:
    """RMIA scores (higher = likelier member) of N targets from the target model's true-class
    probabilities `target_x` (N,) and the references' `refs_x` (N, K), against M population
    records `target_z` (M,), `refs_z` (M, K). Offline when `a` is given (only the OUT entries
    of `in_x`/`in_z` are used; None: all are OUT), online when `a` is None."""
    tx = np.asarray(target_x, np.float64).reshape(-1)
    tz = np.asarray(target_z, np.float64).reshape(-1)
    if np.shape(refs_x)[0] != tx.size or np.shape(refs_z)[0] != tz.size:
        raise ValueError("reference probabilities need one row per record")
    ratio_x = tx / marginal(refs_x, in_x, a)
    ratio_z = tz / marginal(refs_z, in_z, a)
    return dominance(ratio_x, ratio_z, gamma)


def tune_a(refs: np.ndarray, in_mask: np.ndarray, pseudo_target: int, pair: int,
           gamma: float = 2.0, grid: tuple[float, ...] = A_GRID) -> tuple[float, dict]:
    """Offline ``a``: attack reference `pseudo_target` on the population records (its members
    are those it trained on) with the references other than it and `pair`, the population as z;
    the grid value with the best AUC (the first of equals) and every AUC."""
    from sklearn.metrics import roc_auc_score

    r = np.asarray(refs, np.float64)
    m = np.asarray(in_mask, bool)
    keep = [k for k in range(r.shape[1]) if k not in (pseudo_target, pair)]
    if not keep:
        raise ValueError("tuning a needs at least one reference besides the pseudo-target "
                         "and its pair")
    labels = m[:, pseudo_target].astype(int)
    target = r[:, pseudo_target]
    others, others_in = r[:, keep], m[:, keep]
    usable = (~others_in).any(axis=1)
    aucs = {}
    for a in grid:
        s = rmia_scores(target[usable], others[usable], target[usable], others[usable],
                        gamma, a, others_in[usable], others_in[usable])
        aucs[a] = float(roc_auc_score(labels[usable], s))
    best = max(grid, key=lambda a: (aucs[a], -grid.index(a)))
    return best, aucs


# --- registered attacks -------------------------------------------------------------------------


@register("rmia-offline", knowledge="reference",
          description="Zarifzadeh et al.: ratio of the target's likelihood to population "
          "records', against OUT references with the a calibration")
def run_rmia_offline(ctx) -> AttackOutcome:
    return ctx.reference("rmia-offline")


@register("rmia-online", knowledge="reference",
          description="Zarifzadeh et al.: RMIA against IN and OUT reference models")
def run_rmia_online(ctx) -> AttackOutcome:
    return ctx.reference("rmia-online")
