"""The ascent-response attack: the statistic Nasr et al.'s active attacker exists for (Section
II-C, Fig. 7).

The active aggregator moves the model it broadcasts up the loss of its target (and known)
records (fedattack.active); the victim's next local training pulls the loss of the records it
trains on back down, and leaves a non-member's where generalisation puts it. A record's response
in round t compares its loss at start_t, the model the victim trained from (the broadcast
``global_{t-1}``, ascended at an ascent round; under isolation the model the aggregator sent it
alone, ``sent_t``), with its loss at upload_t, the victim's upload (``ascent-response.statistic``):

* ``log-ratio`` (default): ``log loss(x; start_t) - log loss(x; upload_t)``, the factor by which
  the victim's training divided the record's loss;
* ``difference``: ``loss(x; start_t) - loss(x; upload_t)``, how much it took off.

Higher = member. The log ratio is the default because it was the better of the two on the
attacker's own known records (never on targets): on table10-purchase-2cores' global runs, AUC
0.78-0.87 against 0.56-0.74 for the difference, which a record's own difficulty (a high loss at
both models) drags towards non-members. On a passive run, or at a round whose start was not
ascended, the response is that of the victim's local training alone, itself a signal.

Rounds. The rounds' responses (``attack.snapshots``) are averaged: the log ratio is unitless, so
each round counts once whatever the size of its ascent and of the victim's steps. A target's
score depends on nothing but its own losses.

Calibration. The decision threshold is the one with the best balanced accuracy between the known
members' and the known non-members' scores (as the loss threshold's); the targets' membership is
never read. Known records are a sound calibration set because the active attacker ascends them
with the targets, in one batch (fedattack.active.ascended_records); ``extra`` gives the score's
AUC on the known records, the attacker's own estimate of its strength.

Reads the aggregator's view only: per observed round, the victim's start model and its upload.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from fedattack.attack_registry import AttackOutcome, register

from .threshold import best_threshold

SMALLEST_LOSS = np.finfo(np.float64).tiny  # a loss that underflowed to 0 is logged as this


def responses(start_losses, upload_losses, statistic: str = "log-ratio") -> np.ndarray:
    """(T, N) responses, round by round: each record's loss at the model the victim started from
    against its loss at the victim's upload, as a log ratio or a difference."""
    before = np.asarray(start_losses, np.float64)
    after = np.asarray(upload_losses, np.float64)
    if before.shape != after.shape:
        raise ValueError(f"start and upload losses differ in shape: {before.shape} != "
                         f"{after.shape}")
    if statistic == "difference":
        return before - after
    if statistic == "log-ratio":
        return _log(before) - _log(after)
    raise ValueError(f"unknown ascent-response statistic {statistic!r}; accepted: log-ratio, "
                     "difference")


def _log(losses: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(losses, SMALLEST_LOSS))


def round_responses(ctx, records: dict[str, np.ndarray], statistic: str
                    ) -> tuple[dict[str, np.ndarray], list[int]]:
    """(T, N) responses of each named set of records over the observed rounds, and the rounds."""
    from .observed import federated_rounds, per_record_losses

    obs = federated_rounds(ctx, with_others=False)
    everyone = np.concatenate(list(records.values()))
    rows = []
    for start, upload in zip(obs.victim_start, obs.victim_uploads, strict=True):
        losses = per_record_losses([start, upload], ctx.dataset, everyone, ctx.device)
        rows.append(responses(losses[0], losses[1], statistic))
    table = np.stack(rows)
    cuts = np.cumsum([len(v) for v in records.values()])[:-1]
    return dict(zip(records, np.split(table, cuts, axis=1), strict=True)), obs.rounds


def _needs_known_records(exp) -> None:
    known = exp.data.knowledge
    if known.train_members < 1 or known.train_nonmembers < 1:
        raise ValueError("needs known members and non-members (data.knowledge.train_members, "
                         "train_nonmembers): they set each round's scale and the threshold")


class AscentResponseParams(BaseModel):
    model_config = {"extra": "forbid"}
    statistic: Literal["log-ratio", "difference"] = "log-ratio"


@register("ascent-response", knowledge="supervised", params=AscentResponseParams,
          scenarios=("federated",), attackers=("global",), reads_uploads=True,
          check=_needs_known_records,
          description="each target's response to the ascent: its loss at the model the victim "
          "trained from against its loss at the victim's upload (log ratio), averaged over the "
          "observed rounds, thresholded on the known records")
def run_ascent_response(ctx) -> AttackOutcome:
    from fedattack.metrics import auc

    k, p = ctx.knowledge, ctx.cfg.params("ascent-response")
    r, rounds = round_responses(ctx, {"targets": k.targets, "members": k.known_members,
                                      "nonmembers": k.known_nonmembers}, p.statistic)
    scores = {name: values.mean(axis=0) for name, values in r.items()}
    threshold = best_threshold(scores["members"], scores["nonmembers"])
    labels = np.r_[np.ones(len(k.known_members)), np.zeros(len(k.known_nonmembers))]
    known = np.concatenate([r["members"], r["nonmembers"]], axis=1)
    attacker = ctx.attacker
    return AttackOutcome(
        "ascent-response", f"loss-{p.statistic}-start-vs-upload", scores["targets"],
        threshold=threshold,
        extra={"rounds": rounds, "statistic": p.statistic,
               "ascended_start": [t > 1 and attacker.ascends(t - 1) for t in rounds],
               "known_auc": auc(labels, np.r_[scores["members"], scores["nonmembers"]]),
               "mean_response_known": [float(x) for x in known.mean(axis=1)]})
