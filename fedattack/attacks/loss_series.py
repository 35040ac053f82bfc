"""The loss-series attack: a target's loss over the observed rounds rather than at the last one.

Reads the attacker's observation and nothing else: for the global attacker the victim's uploads
at the observed rounds (``upload_t`` of its partition in the aggregator's view), for a local
attacker the global models it received (``global_t``, or ``sent_t`` in its own view), for the
rounds of ``attack.snapshots``. No known records, no reference models.

Statistics (higher = member), over the losses l_1..l_T of a record at rounds r_1 < ... < r_T:

* ``mean``: ``-mean_t l_t``, the loss threshold's signal averaged over rounds (a record trained
  on is fitted at every round, a held-out one only by generalisation);
* ``slope``: ``-`` the least-squares slope of l_t against r_t, how fast the record's loss falls
  (needs two rounds or more).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from fedattack.attack_registry import AttackOutcome, register

from .observed import scored


class LossSeriesParams(BaseModel):
    model_config = {"extra": "forbid"}
    statistic: Literal["mean", "slope"] = "mean"


def loss_series_scores(losses, rounds, statistic: str = "mean") -> np.ndarray:
    """Scores of N records from their (T, N) `losses` at the T observed `rounds`."""
    lo = np.asarray(losses, np.float64)
    r = np.asarray(rounds, np.float64).reshape(-1)
    if lo.ndim != 2 or lo.shape[0] != r.size:
        raise ValueError(f"losses must be (T={r.size}, N), got {lo.shape}")
    if statistic == "mean":
        return -lo.mean(axis=0)
    if statistic == "slope":
        if r.size < 2 or np.ptp(r) == 0:
            raise ValueError("the slope statistic needs two distinct rounds or more")
        centred = r - r.mean()
        return -(centred @ (lo - lo.mean(axis=0))) / (centred @ centred)
    raise ValueError(f"unknown loss-series statistic {statistic!r}; accepted: mean, slope")


def _check(exp) -> None:
    if exp.attack.params("loss-series").statistic == "slope" and \
            exp.attack.snapshots != "recorded" and len(set(exp.attack.snapshots)) < 2:
        raise ValueError("with statistic slope needs two rounds or more in attack.snapshots")


@register("loss-series", knowledge="observed", params=LossSeriesParams,
          scenarios=("federated",), check=_check,
          description="each target's loss over the observed rounds (its mean, or how fast it "
          "falls), under the models the attacker observed")
def run_loss_series(ctx) -> AttackOutcome:
    from .observed import per_record_losses

    p = ctx.cfg.params("loss-series")
    rounds = list(ctx.obs.rounds)
    losses = per_record_losses(ctx.obs.models, ctx.dataset, ctx.knowledge.targets, ctx.device)
    return scored("loss-series", f"loss-{p.statistic}-over-rounds",
                         loss_series_scores(losses, rounds, p.statistic),
                  extra={"rounds": rounds, "statistic": p.statistic})
