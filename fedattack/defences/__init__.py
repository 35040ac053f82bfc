"""The defences, one module each: its config block, where its server wrapper or client mod
lives, and what it hides from which attacker. The threat model (fedattack.observation, the
attack registry's refusals, the run's defence label, `fedattack list`) reads them from here
instead of knowing each defence.

A new defence is one module (a `Defence` named ``DEFENCE``) and one line in `DEFENCES`.

Nothing here imports fedattack.config, Flower or torch: an experiment is read by attribute, and
the server and client pieces are named (``module:attribute``), loaded only by the roles that run
them.
"""

from __future__ import annotations

from fedattack.defences import client_dp, dp_sgd, secagg, selective_sharing
from fedattack.defences.base import AGGREGATOR, PARTICIPANT, Defence

DEFENCES: tuple[Defence, ...] = (  # in the order the run's defence label names them
    dp_sgd.DEFENCE,
    selective_sharing.DEFENCE,
    client_dp.DEFENCE,
    secagg.DEFENCE,
)


def active(exp) -> list[Defence]:
    """The defences `exp` deploys, in `DEFENCES` order."""
    return [d for d in DEFENCES if d.active(exp)]


def hiding_uploads(exp) -> Defence | None:
    """The deployed defence that hides each participant's upload from the aggregator (the
    aggregator then sees only their sum), or None."""
    return next((d for d in active(exp) if d.hides_uploads_from_aggregator), None)


def label(exp) -> str:
    """The defences `exp` deploys, in a few words (``none`` without any)."""
    return " + ".join(d.label(exp) for d in active(exp)) or "none"


__all__ = ["AGGREGATOR", "DEFENCES", "PARTICIPANT", "Defence", "active", "hiding_uploads",
           "label"]
