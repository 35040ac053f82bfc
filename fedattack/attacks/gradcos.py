"""Li et al.'s gradient attacks (ICLR 2023, "Effective passive membership inference attacks in
federated learning against overparameterized models"): a record's loss gradient at the model a
participant trained from points along that participant's update when the record was in its data.

Reads from the aggregator's view (``"global"``), for each observed round t (``attack.snapshots``):
the broadcast model ``global_{t-1}`` (under isolation, the model sent to the victim, ``sent_t``)
and the victim's upload ``upload_t``; the victim's update is ``u_t = global_{t-1} - upload_t``.
For each target record, g_t is its cross-entropy gradient at ``global_{t-1}`` (all trainable
parameters, flattened). Nothing else (no known records, no reference models, no other
participant's upload).

* ``gradcos``: the mean over the observed rounds of ``cos(g_t, u_t)`` (higher = member).
* ``graddiff``: the mean over rounds of ``||u_t|| - ||u_t - g_t||``, how much shorter the update
  gets once the record's gradient is taken out of it: positive when g_t is aligned with u_t
  and small against it, the two marks of a record trained on (our reading of the paper's
  gradient-difference test; the raw gradient, unscaled).
"""

from __future__ import annotations

import numpy as np

from fedattack.attack_registry import AttackOutcome, register

from .observed import scored


def _table(values, what: str) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{what} must be (rounds, records), got {np.shape(values)}")
    return a


def cosine_scores(dots, grad_sq_norms, update_norms) -> np.ndarray:
    """Mean over rounds of ``g.u / (|g| |u|)``: `dots` and `grad_sq_norms` (T, N), ``|g|^2``,
    `update_norms` (T,) ``|u|``. A zero gradient or update scores 0 (no direction)."""
    d = _table(dots, "dots")
    g = np.sqrt(_table(grad_sq_norms, "grad_sq_norms"))
    u = np.asarray(update_norms, np.float64).reshape(-1, 1)
    if g.shape != d.shape or u.shape[0] != d.shape[0]:
        raise ValueError("dots, gradient norms and update norms disagree in shape")
    denominator = g * u
    cos = np.divide(d, denominator, out=np.zeros_like(d), where=denominator > 0)
    return cos.mean(axis=0)


def difference_scores(dots, grad_sq_norms, update_norms) -> np.ndarray:
    """Mean over rounds of ``|u| - |u - g|``, with ``|u - g|^2 = |u|^2 - 2 g.u + |g|^2``."""
    d = _table(dots, "dots")
    g2 = _table(grad_sq_norms, "grad_sq_norms")
    u = np.asarray(update_norms, np.float64).reshape(-1, 1)
    if g2.shape != d.shape or u.shape[0] != d.shape[0]:
        raise ValueError("dots, gradient norms and update norms disagree in shape")
    rest = np.sqrt(np.maximum(u**2 - 2 * d + g2, 0.0))
    return (u - rest).mean(axis=0)


def victim_alignment(ctx):
    """(dots, squared gradient norms, update norms) of the targets over the observed rounds."""
    from .observed import federated_rounds, gradient_alignment, update

    obs = federated_rounds(ctx)
    targets = ctx.knowledge.targets
    dots, norms, unorms = [], [], []
    for before, after in zip(obs.victim_start, obs.victim_uploads, strict=True):
        u = update(before, after)
        d, g2 = gradient_alignment(before, ctx.dataset, targets, u[None, :], ctx.device)
        dots.append(d[0])
        norms.append(g2)
        unorms.append(float(u.norm()))
    return np.stack(dots), np.stack(norms), np.asarray(unorms), obs.rounds


@register("gradcos", knowledge="observed", scenarios=("federated",), attackers=("global",),
          reads_uploads=True,
          description="Li et al.: cosine of each target's gradient at the "
          "broadcast model with the victim's update, averaged over the observed rounds")
def run_gradcos(ctx) -> AttackOutcome:
    dots, norms, unorms, rounds = victim_alignment(ctx)
    return scored("gradcos", "gradient-cosine", cosine_scores(dots, norms, unorms),
                  extra={"rounds": rounds, "update_norms": unorms.tolist()})


@register("graddiff", knowledge="observed", scenarios=("federated",), attackers=("global",),
          reads_uploads=True,
          description="Li et al.: how much shorter the victim's update gets once "
          "a target's gradient is subtracted, averaged over the observed rounds")
def run_graddiff(ctx) -> AttackOutcome:
    dots, norms, unorms, rounds = victim_alignment(ctx)
    return scored("graddiff", "gradient-difference", difference_scores(dots, norms, unorms),
                  extra={"rounds": rounds, "update_norms": unorms.tolist()})
