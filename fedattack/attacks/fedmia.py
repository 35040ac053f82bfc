"""FedMIA (Zhu et al. 2024, "FedMIA: an effective membership inference attack exploiting 'all for
one' principle in federated learning"): the other participants' uploads are reference models that
never trained on the victim's records, so each target's signal under the victim's upload is
tested against the same signal under theirs, round by round (an offline LiRA whose references
come for free).

Reads from the aggregator's view (``"global"``), for each observed round t (``attack.snapshots``):
every participant's upload ``upload_t^j`` and, for the cosine statistic, the broadcast model
``global_{t-1}``. Nothing else: no known records, no trained reference model.

Per round t and target x, with the statistic

* ``loss``: ``s_j = -loss(x; upload_t^j)``;
* ``cosine``: ``s_j = cos(grad loss(x; global_{t-1}), global_{t-1} - upload_t^j)`` (under
  isolation the victim's gradient and update are taken from the model sent to it),

a Gaussian N(mu, sigma^2) is fitted to the non-victims' values (sigma per record, or pooled over
records: ``fedmia.variance``, as LiRA's) and the victim's value scored by the one-sided test
``-log Pr[Z > s_victim]``. The rounds' scores are summed (the log of the product of the rounds'
one-sided p-values: every observed round is one more independent look at the record).
Requires data partitions that do not share records (the default, ``data.overlap`` off): a record
of the victim held by another participant would sit in its reference.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from fedattack.attack_registry import AttackOutcome, register

from .lira import lira_offline
from .observed import scored


class FedMIAParams(BaseModel):
    model_config = {"extra": "forbid"}
    statistic: Literal["loss", "cosine"] = "loss"
    variance: Literal["per-example", "global"] = "global"


def fedmia_scores(victim, others, variance: str = "global") -> np.ndarray:
    """FedMIA scores (higher = likelier member) from the victim's signals `victim` (T, N) and the
    other participants' `others` (T, N, K) over T rounds: the sum over rounds of the offline
    LiRA test ``-log Pr[Z > victim_t]``, Z ~ N(mean, std of others_t)."""
    v = np.asarray(victim, np.float64)
    o = np.asarray(others, np.float64)
    if v.ndim == 1:
        v, o = v[None], o[None]
    if o.ndim != 3 or o.shape[:2] != v.shape:
        raise ValueError(f"others must be (T, N, K) for victim (T, N) {v.shape}, got {o.shape}")
    return sum(lira_offline(v[t], o[t], variance) for t in range(v.shape[0]))


def check_other_uploads(exp) -> None:
    """Refuses a federation whose other participants' uploads are no references for the victim."""
    if exp.federation.num_participants < 3:
        raise ValueError("needs at least 2 participants besides the victim (their uploads are "
                         "its reference models)")
    if exp.data.overlap:
        raise ValueError("needs disjoint partitions (data.overlap off): another participant "
                         "holding a victim's record is no reference for it")


def signals(ctx, statistic: str):
    """(victim (T, N), others (T, N, K)) signals of the targets over the observed rounds."""
    from .observed import federated_rounds, gradient_alignment, per_record_losses, update

    obs = federated_rounds(ctx)
    targets = ctx.knowledge.targets
    victim, others = [], []
    for t, before in enumerate(obs.broadcast):
        uploads = [obs.victim_uploads[t], *obs.other_uploads[t]]
        if statistic == "loss":
            s = -per_record_losses(uploads, ctx.dataset, targets, ctx.device)
        else:
            start = obs.victim_start[t]
            u = [update(start, uploads[0]), *(update(before, m) for m in uploads[1:])]
            dots, g2 = gradient_alignment(start, ctx.dataset, targets,
                                          np.stack([x.numpy() for x in u]), ctx.device)
            unorm = np.array([float(x.norm()) for x in u])[:, None]
            den = np.sqrt(g2)[None, :] * unorm
            s = np.divide(dots, den, out=np.zeros_like(dots), where=den > 0)
        victim.append(s[0])
        others.append(s[1:].T)
    return np.stack(victim), np.stack(others), obs


@register("fedmia", knowledge="observed", params=FedMIAParams, scenarios=("federated",),
          attackers=("global",), check=check_other_uploads,
          reads_uploads=True,
          description="Zhu et al.: each target's loss (or gradient cosine) under the victim's "
          "upload against a Gaussian of the other participants', summed over the rounds")
def run_fedmia(ctx) -> AttackOutcome:
    p = ctx.cfg.params("fedmia")
    victim, others, obs = signals(ctx, p.statistic)
    return scored("fedmia", f"{p.statistic}-vs-other-uploads",
                         fedmia_scores(victim, others, p.variance),
                  extra={"rounds": obs.rounds, "references": obs.others,
                                "statistic": p.statistic, "variance": p.variance})
