"""The ascent-response attack: the statistic Nasr et al.'s active attacker exists for (Section
II-C, Fig. 7).

The active aggregator moves the model it broadcasts up the loss of its target (and known)
records (fedattack.active); the victim's next local training pulls the loss of the records it
trains on back down, and leaves a non-member's where generalisation puts it. A record's response
in round t is

    r_t(x) = loss(x; start_t) - loss(x; upload_t)

with start_t the model the victim trained from in round t (the broadcast ``global_{t-1}``, ascended
at an ascent round; under isolation the model the aggregator sent it alone, ``sent_t``) and
upload_t its upload. Higher = member. On a passive run, or at a round whose start was not
ascended, it is the loss drop of the victim's local training alone, itself a (weaker) signal.

Rounds. Each observed round's responses (``attack.snapshots``) are standardised by the mean and
standard deviation of the attacker's known records' responses in that round (known members and
non-members pooled: no membership label is read), then averaged over the rounds, so that each
round counts once, in the unit of its own spread, whatever the size of its ascent and of the
victim's steps. A target's score depends on no other target.

Calibration. The decision threshold is the one with the best balanced accuracy between the known
members' and the known non-members' scores (as the loss threshold's); the targets' membership is
never read. Known records are a sound calibration set because the active attacker ascends them
with the targets, in one batch (fedattack.active.ascended_records); ``extra`` gives the score's
AUC on the known records, the attacker's own estimate of its strength.

Reads the aggregator's view only: per observed round, the victim's start model and its upload.
"""

from __future__ import annotations

import numpy as np

from fedattack.attack_registry import AttackOutcome, register

from .threshold import best_threshold


def standardised_mean(responses, known) -> np.ndarray:
    """Scores of N records from their (T, N) `responses` over T rounds: each round standardised
    by the mean and standard deviation of the (T, K) `known` records' responses that round (a
    round where they do not vary is only centred), averaged over the rounds."""
    r = np.asarray(responses, np.float64)
    k = np.asarray(known, np.float64)
    if r.ndim != 2 or k.ndim != 2 or r.shape[0] != k.shape[0] or k.shape[1] < 2:
        raise ValueError(f"responses (T, N) and known (T, K >= 2) must share T, got {r.shape} "
                         f"and {k.shape}")
    centre = k.mean(axis=1, keepdims=True)
    spread = k.std(axis=1, keepdims=True)
    spread[spread == 0] = 1.0
    return ((r - centre) / spread).mean(axis=0)


def responses(start_losses, upload_losses) -> np.ndarray:
    """(T, N) responses: each record's loss at the model the victim started from minus its loss
    at the victim's upload, round by round."""
    before = np.asarray(start_losses, np.float64)
    after = np.asarray(upload_losses, np.float64)
    if before.shape != after.shape:
        raise ValueError(f"start and upload losses differ in shape: {before.shape} != "
                         f"{after.shape}")
    return before - after


def round_responses(ctx, records: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list]:
    """(T, N) responses of each named set of records over the observed rounds, and the rounds."""
    from .observed import federated_rounds, per_record_losses

    obs = federated_rounds(ctx, with_others=False)
    everyone = np.concatenate(list(records.values()))
    rows = []
    for start, upload in zip(obs.victim_start, obs.victim_uploads, strict=True):
        losses = per_record_losses([start, upload], ctx.dataset, everyone, ctx.device)
        rows.append(responses(losses[0], losses[1]))
    table = np.stack(rows)
    cuts = np.cumsum([len(v) for v in records.values()])[:-1]
    return dict(zip(records, np.split(table, cuts, axis=1), strict=True)), obs.rounds


def _needs_known_records(exp) -> None:
    known = exp.data.knowledge
    if known.train_members < 1 or known.train_nonmembers < 1:
        raise ValueError("needs known members and non-members (data.knowledge.train_members, "
                         "train_nonmembers): they set each round's scale and the threshold")


@register("ascent-response", knowledge="supervised", scenarios=("federated",),
          attackers=("global",), reads_uploads=True, check=_needs_known_records,
          description="each target's response to the ascent: its loss at the model the victim "
          "trained from minus its loss at the victim's upload, standardised round by round on "
          "the known records, thresholded on them")
def run_ascent_response(ctx) -> AttackOutcome:
    from fedattack.metrics import auc

    k = ctx.knowledge
    r, rounds = round_responses(ctx, {"targets": k.targets, "members": k.known_members,
                                      "nonmembers": k.known_nonmembers})
    known = np.concatenate([r["members"], r["nonmembers"]], axis=1)
    scores = {name: standardised_mean(values, known) for name, values in r.items()}
    threshold = best_threshold(scores["members"], scores["nonmembers"])
    labels = np.r_[np.ones(len(k.known_members)), np.zeros(len(k.known_nonmembers))]
    attacker = ctx.exp.attacker
    return AttackOutcome(
        "ascent-response", "loss-drop-from-start-to-upload", scores["targets"],
        threshold=threshold,
        extra={"rounds": rounds,
               "ascended_start": [t > 1 and attacker.ascends(t - 1) for t in rounds],
               "known_auc": auc(labels, np.r_[scores["members"], scores["nonmembers"]]),
               "mean_response_known": [float(x) for x in known.mean(axis=1)]})
