"""The calibrated white-box attack: Nasr et al.'s white-box features of each target record,
standardised per record against models that never trained on it (the idea that makes LiRA
strong), and combined without learning.

Features of a record (x, y) under a model (float64, one value per model and record):

* ``loss``: the cross-entropy ``-log p_y`` (member: lower);
* ``logit_confidence``: ``log(p_y / (1 - p_y))`` of the true class, from the logits (LiRA's
  statistic; member: higher);
* ``log_grad_norm:<layer>``: the log of the L2 norm of the loss gradient with respect to that
  layer's weights and bias, for each layer of ``gradients`` (default: ``attack.features.gradients``;
  member: lower). The log makes the positive, skewed norms closer to the Gaussian fitted to them.

They come from :class:`fedattack.features.FeatureExtractor` (``scalar_summaries``, one
extractor per gradient layer, every model a "snapshot" of it).

**The references** (models that never saw the target records):

* ``calibrated-whitebox``: the offline reference models of LiRA and RMIA
  (:mod:`fedattack.attacks.references`: the target's architecture and recipe, trained on the
  attacker's unlabelled population, never on a target; the same cache entry as
  ``lira-offline``/``rmia-offline``), against the last observed snapshot. Knowledge
  ``reference``; every scenario and attacker.
* ``calibrated-whitebox-uploads``: for the aggregator (global attacker) of a federation, the other
  participants' uploads of each observed round (``attack.snapshots``), against the victim's upload
  of the same round, as FedMIA uses them. Knowledge ``observed``: no trained model, no known
  record. Needs disjoint partitions and two participants besides the victim. An upload never
  trained on the victim's records in its own local step, but it started from a global model
  that did in the earlier rounds: the calibration removes only what the victim's last local
  training added (measured in docs/reproductions/calibrated.md: weaker than the offline
  references). Under isolation the
  victim trained from another model than the others, so the calibration is off; it is not refused
  (as FedMIA is not), but read such a result with that in mind.

**The score.** Per record n and feature f, a Gaussian is fitted to the references' values
(mean per record; standard deviation per record or pooled over records, ``variance``, as LiRA's):
``z_nf = o_f (t_nf - mu_nf) / sigma_nf``, oriented by ``o_f`` (+1 where members are higher, -1
where lower) so that a larger z says member. The features are combined with fixed weights,
nothing is fitted to labels:

* ``combine: sum``: the mean over features of ``z_nf`` (Stouffer's combination);
* ``combine: fisher``: the sum over features of the one-sided ``-log Pr[Z > z_nf]`` (Fisher's).

Over several rounds (uploads) the rounds' scores are summed, as FedMIA sums its rounds. There is
no learnt part, so there is no loss-threshold floor to check (the floor of the learnt attacks,
``undertrained`` in the results).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from fedattack.attack_registry import AttackOutcome, register

from .fedmia import check_other_uploads
from .lira import gaussian_fit
from .observed import scored

MIN_NORM = 1e-30  # floor under a gradient norm before its log (an exactly zero gradient)
ORIENTATION = {"loss": -1.0, "logit_confidence": 1.0, "log_grad_norm": -1.0}
COMBINES = ("sum", "fisher")


class CalibratedParams(BaseModel):
    model_config = {"extra": "forbid"}
    gradients: list[int | str] | None = None  # layers; None: attack.features.gradients
    combine: Literal["sum", "fisher"] = "sum"
    variance: Literal["per-example", "global"] = "global"


def orientation(names: list[str]) -> np.ndarray:
    """+1 or -1 per feature name (``log_grad_norm:<layer>`` counts as ``log_grad_norm``)."""
    return np.array([ORIENTATION[n.split(":")[0]] for n in names], np.float64)


def standardised(target, references, variance: str = "global") -> np.ndarray:
    """(N, F) ``(t - mu) / sigma`` of the target's features `target` (N, F) under a Gaussian
    fitted, per record and feature, to the references' `references` (N, K, F)."""
    t = np.asarray(target, np.float64)
    r = np.asarray(references, np.float64)
    if t.ndim != 2 or r.ndim != 3 or r.shape[0] != t.shape[0] or r.shape[2] != t.shape[1]:
        raise ValueError(f"references must be (N, K, F) for the target's (N, F) {t.shape}, "
                         f"got {r.shape}")
    z = np.empty_like(t)
    everywhere = np.ones(r.shape[:2], bool)
    for f in range(t.shape[1]):
        mu, sigma = gaussian_fit(r[:, :, f], everywhere, variance, "reference")
        z[:, f] = (t[:, f] - mu) / sigma
    return z


def calibrated_scores(target, references, signs, variance: str = "global",
                      combine: str = "sum") -> np.ndarray:
    """Scores (higher = likelier member) of N records from the target's features over T rounds
    `target` (T, N, F) and the references' `references` (T, N, K, F) (or one round: (N, F) and
    (N, K, F)), features oriented by `signs` (F,): per round the `combine` of the oriented
    standardised features, summed over the rounds (module docstring)."""
    if combine not in COMBINES:
        raise ValueError(f"unknown combine {combine!r}; accepted: {', '.join(COMBINES)}")
    t = np.asarray(target, np.float64)
    r = np.asarray(references, np.float64)
    if t.ndim == 2:
        t, r = t[None], r[None]
    o = np.asarray(signs, np.float64).reshape(-1)
    if t.ndim != 3 or r.ndim != 4 or r.shape[0] != t.shape[0] or o.size != t.shape[2]:
        raise ValueError(f"target (T, N, F), references (T, N, K, F) and signs (F,) disagree: "
                         f"{t.shape}, {r.shape}, {o.shape}")
    from scipy.special import log_ndtr  # imported when used: registering stays cheap

    total = np.zeros(t.shape[1], np.float64)
    for step in range(t.shape[0]):
        z = standardised(t[step], r[step], variance) * o
        total += z.mean(axis=1) if combine == "sum" else (-log_ndtr(-z)).sum(axis=1)
    return total


def record_features(models, layers, dataset, indices, device,
                    memory_mb: float) -> tuple[np.ndarray, list[str]]:
    """(N, M, F) float64 features of the records at `indices` under each of M `models` (one
    architecture), and the F feature names: loss, logit confidence, log gradient norm per layer."""
    from fedattack.features import FeatureExtractor, FeatureSpec

    def summaries(grads: tuple) -> dict[str, np.ndarray]:
        spec = FeatureSpec(gradients=grads, activations=(), output=False, loss=True, label=False)
        return FeatureExtractor(models, spec, dataset.num_classes, device,
                                memory_mb).scalar_summaries(dataset, indices)

    per_layer = [summaries((layer,)) for layer in layers]
    first = per_layer[0] if per_layer else summaries(())
    names = ["loss", "logit_confidence", *(f"log_grad_norm:{layer}" for layer in layers)]
    columns = [first["loss"], first["logit_confidence"],
               *(np.log(np.maximum(s["grad_norm"], MIN_NORM)) for s in per_layer)]
    return np.stack(columns, axis=-1), names


def _params(ctx, name: str) -> tuple[CalibratedParams, list]:
    p = ctx.cfg.params(name)
    layers = list(ctx.cfg.features.gradients) if p.gradients is None else list(p.gradients)
    return p, layers


def _features(ctx, models, layers):
    return record_features(models, layers, ctx.dataset, ctx.knowledge.targets, ctx.device,
                           ctx.cfg.memory_mb)


@register("calibrated-whitebox", knowledge="reference", params=CalibratedParams,
          description="loss, logit confidence and per-layer gradient norms of each target, "
          "standardised against the offline reference models' and combined without learning")
def run_calibrated_whitebox(ctx) -> AttackOutcome:
    from .references import obtain_references

    p, layers = _params(ctx, "calibrated-whitebox")
    refs = obtain_references("calibrated-whitebox", ctx.input)
    values, names = _features(ctx, [ctx.obs.models[-1], *refs.models], layers)
    scores = calibrated_scores(values[:, 0], values[:, 1:], orientation(names), p.variance,
                               p.combine)
    return scored("calibrated-whitebox", "+".join(names) + " vs reference models", scores,
                  extra={"features": names, "combine": p.combine, "variance": p.variance,
                         "reference_models": len(refs.models),
                         "reference_records": len(refs.spec.train_sets[0]),
                         "reference_epochs": refs.spec.epochs,
                         "reference_cached": not refs.trained,
                         "reference_time_s": round(refs.seconds, 2)})


@register("calibrated-whitebox-uploads", knowledge="observed", params=CalibratedParams,
          scenarios=("federated",), attackers=("global",), check=check_other_uploads,
          reads_uploads=True,
          description="loss, logit confidence and per-layer gradient norms of each target "
          "under the victim's upload, standardised against the other participants' uploads, "
          "summed over the observed rounds")
def run_calibrated_uploads(ctx) -> AttackOutcome:
    from .observed import federated_rounds

    p, layers = _params(ctx, "calibrated-whitebox-uploads")
    obs = federated_rounds(ctx)
    target, references = [], []
    for mine, theirs in zip(obs.victim_uploads, obs.other_uploads, strict=True):
        values, names = _features(ctx, [mine, *theirs], layers)
        target.append(values[:, 0])
        references.append(values[:, 1:])
    scores = calibrated_scores(np.stack(target), np.stack(references), orientation(names),
                               p.variance, p.combine)
    return scored("calibrated-whitebox-uploads", "+".join(names) + " vs other uploads", scores,
                  extra={"features": names, "combine": p.combine, "variance": p.variance,
                         "rounds": obs.rounds, "references": obs.others})
