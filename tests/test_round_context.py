"""The ClientApp parses each fit config once into a RoundContext (with the node's data-path) and
hands it to the role."""

import numpy as np
import pytest
from flwr.common import RecordDict

import clients.round as round_module
from clients.client_app import Participant
from clients.honest import HonestClient
from clients.round import RoundContext
from fedattack import protocol
from fedattack.config import Experiment
from fedattack.experiment import cached_dataset, initial_model
from fedattack.training import get_weights

EXP = Experiment(
    name="ctx", seed=3, device="cpu",
    data={"dataset": "purchase100-synth", "num_records": 2000, "train_size": 200,
          "nonmember_size": 500, "root": "/nonexistent/experiment-root",
          "knowledge": {"train_members": 40, "train_nonmembers": 40, "test_members": 40,
                        "test_nonmembers": 40}},
    federation={"num_participants": 3, "rounds": 3, "record_rounds": [2, 3]},
    attacker={"kind": "local", "mode": "gradient-ascent", "participant": 1},
)


def fit_config(server_round, **extra):
    return {protocol.SERVER_ROUND: server_round, protocol.LR: 0.05,
            protocol.EXPERIMENT: EXP.model_dump_json(), **extra}


@pytest.fixture
def loads(monkeypatch):
    """The roots datasets are loaded from, and how often a fit config is parsed."""
    seen = {"roots": [], "parses": 0}

    def load(name, root, num_records):
        seen["roots"].append(root)
        return cached_dataset(name, None, num_records)

    setup = round_module.experiment_setup.__wrapped__

    def counted(exp_json, data_root):
        seen["parses"] += 1
        return setup(exp_json, data_root)

    monkeypatch.setattr(round_module, "cached_dataset", load)
    monkeypatch.setattr(round_module, "experiment_setup", counted)
    return seen


def test_context_holds_the_round_and_the_nodes_data(loads):
    ctx = RoundContext.parse(fit_config(2, proximal_mu=0.25), 2, "/node/data-path")
    assert (ctx.server_round, ctx.lr, ctx.proximal_mu, ctx.partition_id) == (2, 0.05, 0.25, 2)
    assert np.array_equal(ctx.indices, ctx.splits.partitions[2])
    assert loads["roots"] == ["/node/data-path"]  # not the experiment's data.root
    assert RoundContext.parse(fit_config(1), 0, None).proximal_mu == 0.0
    assert loads["roots"][-1] == "/nonexistent/experiment-root"  # no data-path: data.root
    with pytest.raises(ValueError, match="partition 3 outside 0..2"):
        RoundContext.parse(fit_config(1), 3, None)


def test_a_round_of_the_local_attacker_parses_the_experiment_once_from_its_data_path(
        loads, tmp_path, one_thread):
    received = get_weights(initial_model(EXP, cached_dataset("purchase100-synth", None, 2000)))
    node = Participant(1, "/node/data-path", None, RecordDict(), str(tmp_path))
    weights, n, metrics = node.fit(received, fit_config(2))  # records and ascends
    assert loads["parses"] == 1
    assert set(loads["roots"]) == {"/node/data-path"}
    assert metrics[protocol.PARTITION_ID] == 1 and n == 200
    honest, _, _ = HonestClient(1, "/node/data-path").fit(received, fit_config(2))
    assert not np.allclose(weights[0], honest[0])  # the attacker ascended


def test_a_participant_tells_the_sampler_its_partition():
    node = Participant(4, None, None, RecordDict())
    assert node.get_properties({}) == {protocol.PARTITION_ID: 4}
