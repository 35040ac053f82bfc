"""The threat model in one module: whom each attacker attacks, what it reads, what the aggregator
may do."""

import numpy as np
import pytest

from fedattack.config import Experiment
from fedattack.observation import (
    Sight,
    aggregator_grants,
    observed_rounds,
    sight_of,
    victim_groups,
)
from fedattack.snapshots import SnapshotStore


def federated(**attacker):
    return Experiment(federation={"num_participants": 3, "rounds": 3},
                      attacker=attacker or None)


def test_each_attacker_reads_its_own_view():
    assert sight_of(Experiment(scenario="standalone"), "all") == Sight(
        "standalone", "passive", "standalone", "model", tags=("final",))
    assert sight_of(Experiment(scenario="finetune"), "D-vs-D-delta").tags == ("before", "after")
    assert sight_of(federated(), "all") == Sight("local", "passive", "global", "global")
    exp = federated(kind="global", mode="isolating", targets=[1, 2])
    assert [name for name, *_ in victim_groups(exp)] == ["participant-1", "participant-2"]
    assert sight_of(exp, "participant-2") == Sight("global", "isolating", "global", "upload", 2)
    local = federated(kind="local", participant=2, mode="gradient-ascent")
    assert victim_groups(local) == [("others-of-2", (0, 1), ())]
    assert sight_of(local, "others-of-2") == Sight("local", "gradient-ascent", "local-2", "sent",
                                                   2)


def test_the_aggregator_is_granted_what_its_mode_says():
    assert aggregator_grants(federated()) is None
    assert aggregator_grants(federated(kind="local", participant=0)) is None
    assert aggregator_grants(Experiment(scenario="standalone")) is None
    passive = aggregator_grants(federated(kind="global"))
    assert passive.isolated == frozenset() and not passive.ascends
    isolating = aggregator_grants(federated(kind="global", mode="isolating-gradient-ascent",
                                            targets=[0, 2]))
    assert isolating.isolated == {0, 2} and isolating.ascends
    ascent = aggregator_grants(federated(kind="global", mode="gradient-ascent", targets=[1]))
    assert ascent.isolated == frozenset() and ascent.ascends


def test_observed_rounds_are_the_recorded_ones_or_one_line_naming_what_is_missing(tmp_path):
    store = SnapshotStore(tmp_path)
    for server_round in (1, 3):
        store.write("global", "upload", server_round, [("w", np.zeros(2, np.float32))],
                    partition=1)
    exp = federated(kind="global", targets=[1])
    view = store.view("global")
    assert observed_rounds(exp, view, "upload", 1) == [1, 3]
    exp.attack = {"snapshots": [2, 3]}
    with pytest.raises(ValueError, match=r"\[2\] were not recorded") as err:
        observed_rounds(exp, view, "upload", 1)
    assert "\n" not in str(err.value)
