"""The threat model: what each attacker attacks, what it observes and what the aggregator may do.

Three questions, answered here together so that a defence that changes what an attacker sees
(secure aggregation: the aggregator sees only the aggregate) is one change in this module:

- :func:`victim_groups`: whom the experiment's attacker attacks (the victims), as the union of
  some participants' training sets; the split draws each victim's knowledge and targets from it.
- :func:`sight_of`: which view of the snapshot store the attacker reads for a victim, and which
  records of it (the victim's uploads, the global models received, the stand-alone model; under
  SecAgg+ the aggregator's view holds no upload, and it reads the aggregates, in every observed
  round whether or not the victim was sampled in it);
  :func:`observed_rounds` resolves the rounds it reads.
- :func:`aggregator_grants`: what a malicious aggregator is allowed to do (isolate, ascend), which
  ``strategies/server_app.py`` turns into the aggregator's arguments.

The views themselves are written by the Flower side: the aggregator's ``global`` view
(strategies/recording.py), each malicious participant's ``local-<p>`` view (clients/), the
``standalone`` view (fedattack/standalone.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedattack import defences
from fedattack.snapshots import GLOBAL_VIEW, STANDALONE_VIEW, local_view

if TYPE_CHECKING:
    from fedattack.config import AttackerConfig, Experiment
    from fedattack.snapshots import View

ALL = "all"  # the victim of stand-alone attacks and of a federation without attacker

FINETUNE_VICTIMS = (  # Table IX's three columns: partition 0 is D, partition 1 is D-delta
    ("D-vs-nonmembers", (0,), ()),
    ("D-delta-vs-nonmembers", (1,), ()),
    ("D-vs-D-delta", (0,), (1,)),
)


def victim_groups(exp: Experiment) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, member partitions, negative partitions) of each victim the experiment's attacker
    attacks; no negative partitions means the held-out non-members."""
    if exp.scenario == "finetune":
        return list(FINETUNE_VICTIMS)
    count = exp.federation.num_participants if exp.scenario == "federated" else 1
    everyone = tuple(range(count))
    attacker = exp.attacker if exp.scenario == "federated" else None
    if attacker is None:
        return [(ALL, everyone, ())]
    if attacker.kind == "local":
        others = tuple(p for p in everyone if p != attacker.participant)
        return [(f"others-of-{attacker.participant}", others, ())]
    targets = everyone if attacker.targets == "all" else tuple(attacker.targets)
    return [(f"participant-{p}", (p,), ()) for p in targets]


@dataclass(frozen=True)
class Sight:
    """What an attacker reads of one victim: records of `kind` in `view` (of `partition`, when
    the records are per participant), at the observed rounds; or, for a stand-alone attacker,
    the models tagged `tags`."""

    attacker: str  # global | local | standalone | standalone-finetune (as results.json says)
    mode: str
    view: str
    kind: str
    partition: int | None = None
    tags: tuple[str, ...] = ()


def sight_of(exp: Experiment, victim: str) -> Sight:
    """The view and records the experiment's attacker reads of `victim`."""
    if exp.scenario == "standalone":
        return Sight("standalone", "passive", STANDALONE_VIEW, "model", tags=("final",))
    if exp.scenario == "finetune":
        return Sight("standalone-finetune", "passive", STANDALONE_VIEW, "model",
                     tags=("before", "after"))
    a = exp.attacker
    if a is None:  # the global models, as every participant receives them
        return Sight("local", "passive", GLOBAL_VIEW, "global")
    if a.kind == "global" and defences.hiding_uploads(exp) is not None:
        # e.g. SecAgg+: no upload is seen, only the sum of each round's sampled participants'
        return Sight("global", a.mode, GLOBAL_VIEW, "global")
    if a.kind == "global":  # the victim participant's own uploads
        (partition,) = {name: owners for name, owners, _ in victim_groups(exp)}[victim]
        return Sight("global", a.mode, GLOBAL_VIEW, "upload", partition)
    # the global models the malicious participant received
    return Sight("local", a.mode, local_view(a.participant), "sent", a.participant)


def observed_text(sight: Sight) -> str:
    """What the attacker's snapshots are, in words (results.json's ``observed``)."""
    if sight.tags:
        return "the stand-alone model" + (" before and after fine-tuning"
                                          if len(sight.tags) > 1 else "")
    if sight.kind == "upload":
        return "the victim's uploads"
    if sight.kind == "sent":
        return "the global models it received"
    if sight.attacker == "global":  # the aggregator reading aggregates: secure aggregation
        return "the aggregates only (secure aggregation hides every upload)"
    return "the global models"


class Unobserved(ValueError):
    """The attacker observed nothing of a victim: it was sampled in none of the rounds."""


def observed_rounds(exp: Experiment, view: View, kind: str, partition: int | None) -> list[int]:
    """The rounds of `attack.snapshots` (default: every recorded one), checked to be on disk.

    Under client sampling a participant's uploads (and a malicious participant's received models)
    exist only for the rounds it was sampled in: its observation is then the listed rounds it
    took part in, and `Unobserved` if there is none."""
    recorded = sorted({r.round for r in view.records(kind=kind, partition=partition)
                       if r.round > 0})
    wanted = exp.attack.snapshots if exp.attack is not None else "recorded"
    rounds = recorded if wanted == "recorded" else list(wanted)
    fed = exp.federation
    if fed.sampled < fed.num_participants:
        rounds = [r for r in rounds if r in recorded]
        if not rounds:
            who = f"participant {partition}" if partition is not None else "the attacker"
            raise Unobserved(f"{who} was sampled in none of the observed rounds ({wanted})")
        return rounds
    missing = sorted(set(rounds) - set(recorded))
    if missing or not rounds:
        raise ValueError(f"attack.snapshots {missing or rounds} were not recorded in view "
                         f"{view.name!r} ({kind}); recorded: {recorded}")
    return rounds


@dataclass(frozen=True)
class AggregatorGrants:
    """What the malicious aggregator may do: leave `isolated` participants out of the others'
    aggregate (each gets its own model back), and ascend on the victims' targets."""

    attacker: AttackerConfig
    isolated: frozenset[int]
    ascends: bool


def aggregator_grants(exp: Experiment) -> AggregatorGrants | None:
    """The malicious aggregator's powers; None when the aggregator is honest (it records)."""
    a = exp.attacker
    if exp.scenario != "federated" or a is None or a.kind != "global":
        return None
    victims = {p for _, owners, _ in victim_groups(exp) for p in owners}
    return AggregatorGrants(a, frozenset(victims if a.isolating else ()), a.active)
