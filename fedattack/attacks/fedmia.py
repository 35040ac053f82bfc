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

a Gaussian N(mu, sigma^2) is fitted to the non-victims' values and the victim's value
standardised, ``z_t = (s_victim - mu) / sigma``. Two choices decide the score:

* ``fedmia.variance``: ``per-example`` is each record's own variance over the other uploads (the
  authors', Liar-Mask/FedMIA ``mia_attack_auto.py``: ``var(axis=0)`` of the references, plus
  1e-8 there; here the standard deviation is floored at 1e-6 instead); ``global`` (the default)
  one variance pooled over records, the mean of the per-record ones, as LiRA recommends with
  few references: with 3 participants a record's variance rests on 2 values.
* ``fedmia.combine``, how the rounds are combined:

  - ``log-p-values`` (the default): the sum over rounds of ``-log Pr[Z > z_t]``, the log of the
    product of the rounds' one-sided p-values (every observed round one more look at the
    record). It keeps its resolution in the upper tail: ``-log Pr[Z > z]`` grows like
    ``z^2 / 2`` where ``Pr[Z <= z]`` has rounded to 1.0.
  - ``mean-cdf`` (the authors'): the mean over rounds of ``Pr[Z <= z_t]``, the Gaussian CDF of
    each round. In float64 the CDF is exactly 1.0 beyond z of about 8.3, so members far above
    their references tie at 1.0; in a single observed round that tie among the strongest
    members is what a TPR at 1% FPR reads, and it comes out 0 where the log form resolves it.

With ``combine: mean-cdf`` and ``variance: per-example`` the score is the authors'; the per-round
statistic is theirs in either case. Requires data partitions that do not share records (the
default, ``data.overlap`` off): a record of the victim held by another participant would sit in
its reference.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from fedattack.attack_registry import AttackOutcome, register

from .lira import gaussian_fit
from .observed import scored


class FedMIAParams(BaseModel):
    model_config = {"extra": "forbid"}
    statistic: Literal["loss", "cosine"] = "loss"
    variance: Literal["per-example", "global"] = "global"
    combine: Literal["log-p-values", "mean-cdf"] = "log-p-values"


def standardised(victim, others, variance: str = "global") -> np.ndarray:
    """(T, N) ``z = (victim - mu) / sigma`` of each round and target: `victim` (T, N) the
    victim's signals, `others` (T, N, K) the other participants', to which each round's Gaussian
    is fitted (``variance``: per-example or global, as LiRA's)."""
    v = np.asarray(victim, np.float64)
    o = np.asarray(others, np.float64)
    if v.ndim == 1:
        v, o = v[None], o[None]
    if o.ndim != 3 or o.shape[:2] != v.shape:
        raise ValueError(f"others must be (T, N, K) for victim (T, N) {v.shape}, got {o.shape}")
    z = np.empty_like(v)
    for t in range(v.shape[0]):
        mu, sigma = gaussian_fit(o[t], np.ones(o[t].shape, bool), variance, "other upload")
        z[t] = (v[t] - mu) / sigma
    return z


def fedmia_scores(victim, others, variance: str = "global",
                  combine: str = "log-p-values") -> np.ndarray:
    """FedMIA scores (higher = likelier member) over T rounds (see the module docstring):
    ``log-p-values`` sums ``-log Pr[Z > z_t]``, ``mean-cdf`` averages ``Pr[Z <= z_t]``."""
    from scipy.special import log_ndtr, ndtr  # imported when used: registering stays cheap

    z = standardised(victim, others, variance)
    if combine == "log-p-values":
        return -log_ndtr(-z).sum(axis=0)
    if combine == "mean-cdf":
        return ndtr(z).mean(axis=0)
    raise ValueError(f"unknown FedMIA combination {combine!r}")


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
          "upload against a Gaussian of the other participants', the rounds' log p-values summed "
          "(or, combine: mean-cdf, the authors' mean of the rounds' CDFs)")
def run_fedmia(ctx) -> AttackOutcome:
    p = ctx.cfg.params("fedmia")
    victim, others, obs = signals(ctx, p.statistic)
    return scored("fedmia", f"{p.statistic}-vs-other-uploads",
                  fedmia_scores(victim, others, p.variance, p.combine),
                  extra={"rounds": obs.rounds, "references": obs.others,
                         "statistic": p.statistic, "variance": p.variance,
                         "combine": p.combine})
