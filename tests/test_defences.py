"""The defences, one module each (issue 27, item 3): the threat model reads them."""

import importlib

from fedattack import defences
from fedattack.config import Experiment
from fedattack.defences import AGGREGATOR, PARTICIPANT, Defence
from fedattack.observation import sight_of

FEDERATED = {"scenario": "federated",
             "federation": {"num_participants": 4, "rounds": 2},
             "attacker": {"kind": "global", "mode": "passive", "targets": [0]}}


def test_each_defence_says_what_it_hides_from_which_attacker_and_where_its_code_is():
    assert [d.name for d in defences.DEFENCES] == [
        "DP-SGD", "selective sharing", "client-level DP", "SecAgg+"]
    for d in defences.DEFENCES:
        assert set(d.hides) == {AGGREGATOR, PARTICIPANT}, d.name
        for ref in (d.server, d.client):
            if ref is not None:  # the named piece exists
                module, _, attr = ref.partition(":")
                assert hasattr(importlib.import_module(module), attr), ref


def test_the_label_and_the_aggregators_sight_come_from_the_deployed_defences():
    plain = Experiment(**FEDERATED)
    assert plain.defence_label() == "none" and defences.active(plain) == []
    assert sight_of(plain, "participant-0").kind == "upload"
    secagg = Experiment(**{**FEDERATED, "federation": {**FEDERATED["federation"],
                                                       "secure_aggregation": True}})
    assert defences.hiding_uploads(secagg).name == "SecAgg+"
    assert secagg.defence_label() == "SecAgg+"
    assert sight_of(secagg, "participant-0").kind == "global"


def test_a_new_defence_is_one_module_and_one_line(monkeypatch):
    """A defence that hides uploads from the aggregator, added to the registry: the aggregator's
    sight and the refusal of upload-reading attacks follow without touching either."""
    shuffler = Defence(name="shuffler", key="federation.rounds",
                       what="a hypothetical mix-net between participants and the aggregator",
                       active=lambda exp: exp.federation.rounds == 7,
                       label=lambda exp: "shuffled",
                       hides={AGGREGATOR: "who uploaded what", PARTICIPANT: "nothing"},
                       hides_uploads_from_aggregator=True)
    monkeypatch.setattr(defences, "DEFENCES", (*defences.DEFENCES, shuffler))  # the one line
    exp = Experiment(**{**FEDERATED, "federation": {"num_participants": 4, "rounds": 7}})
    assert exp.defence_label() == "shuffled"
    assert sight_of(exp, "participant-0").kind == "global"
    from fedattack import attack_registry as registry
    fedmia = registry.get("fedmia")
    assert fedmia.reads_uploads
    assert "which shuffler (federation.rounds) hides from the aggregator" in fedmia.refusal(exp)
