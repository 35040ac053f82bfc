"""The active attackers' ascent step: relative to the round's update, and a federation that stays
useful under the default step (driven without Ray: the real strategy and participants, by hand)."""

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, RecordDict, Status, ndarrays_to_parameters
from flwr.common import parameters_to_ndarrays as to_arrays
from pydantic import ValidationError

from clients.client_app import Participant
from fedattack.active import GradientAscent, ascent_for
from fedattack.config import ASCENT_FRACTION, AttackerConfig, Experiment
from fedattack.experiment import RUN_FILE
from fedattack.io import read_json
from fedattack.training import get_weights
from strategies.server_app import build_strategy
from tests.flower_fakes import client_manager


def mlp(bn: bool = False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(8, 16)] + ([torch.nn.BatchNorm1d(16)] if bn else [])
    return torch.nn.Sequential(*layers, torch.nn.Tanh(), torch.nn.Linear(16, 4))


def norm(arrays) -> float:
    return float(np.sqrt(sum(float((np.asarray(a, np.float64) ** 2).sum()) for a in arrays)))


def round_of_training(model, scale=0.05, seed=1):
    """(start, end) weights of a made-up round: every entry moved, buffers included."""
    rng = np.random.default_rng(seed)
    start = get_weights(model)
    end = [w + rng.normal(scale=scale, size=w.shape).astype(w.dtype) if w.dtype.kind == "f"
           else w + 1 for w in start]
    return start, end


@pytest.mark.parametrize("fraction", [0.05, 0.3, 2.0])
def test_relative_step_is_the_fraction_of_the_update_norm_per_layer(fraction):
    model = mlp()
    x, y = torch.randn(20, 8), torch.randint(0, 4, (20,))
    start, end = round_of_training(model)
    ascent = GradientAscent(mlp(), x, y, fraction=fraction, norm="layer")
    moved = ascent(end, start)
    _, grads = ascent.loss_and_grads(end)
    names = list(model.state_dict())
    for i, name in enumerate(names):
        step, update = moved[i] - end[i], end[i] - start[i]
        assert norm([step]) == pytest.approx(fraction * norm([update]), rel=1e-4), name
        cosine = float(np.dot(step.ravel(), grads[name].numpy().ravel())
                       / (norm([step]) * norm([grads[name].numpy()])))
        assert cosine == pytest.approx(1.0, abs=1e-4), name  # along the target-loss gradient
    assert ascent.last["step_norm"] == pytest.approx(norm([m - e for m, e in zip(
        moved, end, strict=True)]), rel=1e-4)
    assert ascent.loss_and_grads(moved)[0] > ascent.last["target_loss"]


def test_relative_global_step_counts_parameters_only_and_leaves_buffers_alone():
    model = mlp(bn=True)
    model.eval()
    x, y = torch.randn(20, 8), torch.randint(0, 4, (20,))
    start, end = round_of_training(model, scale=0.2)
    ascent = GradientAscent(mlp(bn=True), x, y, fraction=0.25, norm="global")
    moved = ascent(end, start)
    names = list(model.state_dict())
    params = {n for n, _ in model.named_parameters()}
    param_update = norm([end[i] - start[i] for i, n in enumerate(names) if n in params])
    assert norm([end[i] - start[i] for i in range(len(names))]) > param_update  # buffers moved
    step = [moved[i] - end[i] for i, n in enumerate(names) if n in params]
    assert norm(step) == pytest.approx(0.25 * param_update, rel=1e-4)
    assert ascent.last["update_norm"] == pytest.approx(param_update, rel=1e-6)
    for i, n in enumerate(names):
        if n not in params:
            np.testing.assert_array_equal(moved[i], end[i])
    # the global step is one multiple of the gradient: per-tensor norms are not all the fraction
    ratios = [norm([moved[i] - end[i]]) / norm([end[i] - start[i]])
              for i, n in enumerate(names) if n in params]
    assert max(ratios) / min(ratios) > 1.5


def test_relative_step_does_not_depend_on_the_gradient_scale():
    """Targets whose loss is steeper (larger gradients) get the same step length; the absolute
    step grows with the gradient."""
    model = mlp()
    x, y = torch.randn(20, 8), torch.randint(0, 4, (20,))
    start, end = round_of_training(model)
    lengths = {}
    for scale in (1.0, 30.0):
        rel = GradientAscent(mlp(), x * scale, y, fraction=0.1)
        ab = GradientAscent(mlp(), x * scale, y, gamma=1.0)
        lengths[scale] = (norm([m - e for m, e in zip(rel(end, start), end, strict=True)]),
                          norm([m - e for m, e in zip(ab(end), end, strict=True)]))
    assert lengths[30.0][0] == pytest.approx(lengths[1.0][0], rel=1e-4)
    assert lengths[30.0][1] > 3 * lengths[1.0][1]


def test_relative_step_needs_the_round_start_and_exactly_one_step_size():
    x, y = torch.randn(4, 8), torch.randint(0, 4, (4,))
    with pytest.raises(ValueError, match="round started from"):
        GradientAscent(mlp(), x, y, fraction=0.1)(get_weights(mlp()))
    with pytest.raises(ValueError, match="exactly one"):
        GradientAscent(mlp(), x, y, gamma=1.0, fraction=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        GradientAscent(mlp(), x, y)
    with pytest.raises(ValueError, match="layer"):
        GradientAscent(mlp(), x, y, fraction=0.1, norm="tensor")


# ------------------------------------------------------------------ configuration

def test_attacker_step_defaults_to_relative_and_absolute_keeps_the_papers_gamma():
    a = AttackerConfig(mode="gradient-ascent")
    assert a.step == "relative"
    assert a.ascent_step == {"fraction": ASCENT_FRACTION, "norm": "layer"}
    a = AttackerConfig(mode="gradient-ascent", fraction=0.3, norm="global")
    assert a.ascent_step == {"fraction": 0.3, "norm": "global"}
    assert AttackerConfig(mode="gradient-ascent", step="absolute").ascent_step == {"gamma": 1.0}
    a = AttackerConfig(mode="gradient-ascent", step="absolute", gamma=0.1)
    assert a.ascent_step == {"gamma": 0.1}
    x, y = torch.randn(4, 8), torch.randint(0, 4, (4,))
    assert ascent_for(mlp(), x, y, a).gamma == 0.1
    again = AttackerConfig.model_validate_json(AttackerConfig(mode="gradient-ascent")
                                               .model_dump_json())  # as the clients get it
    assert again.ascent_step == {"fraction": ASCENT_FRACTION, "norm": "layer"}


@pytest.mark.parametrize("fields, message", [
    ({"gamma": 1.0}, "gamma is the absolute step"),
    ({"step": "absolute", "fraction": 0.1}, "belong to step: relative"),
    ({"step": "absolute", "norm": "layer"}, "belong to step: relative"),
    ({"fraction": 0.0}, "greater than 0"),
    ({"fraction": -0.1}, "greater than 0"),
    ({"fraction": 11}, "less than or equal to 10"),
    ({"norm": "tensor"}, "'layer' or 'global'"),
    ({"step": "literal"}, "'relative' or 'absolute'"),
    ({"step": "absolute", "gamma": 0}, "greater than 0"),
])
def test_attacker_step_options_are_validated(fields, message):
    with pytest.raises(ValidationError, match=message):
        AttackerConfig(mode="gradient-ascent", **fields)


# ------------------------------------------------------------------ a tiny federation, no Ray

def tiny(name: str, attacker: dict | None, rounds: int = 8) -> Experiment:
    return Experiment(
        name=name, seed=3, scenario="federated",
        data={"dataset": "purchase100-synth", "num_records": 3000, "train_size": 300,
              "nonmember_size": 1000,
              "knowledge": {"train_members": 50, "train_nonmembers": 50, "test_members": 50,
                            "test_nonmembers": 50}},
        model={"arch": "purchase-fc", "activation": "tanh"},
        training={"optimizer": "adam", "lr": 0.001, "batch_size": 64},
        federation={"num_participants": 4, "rounds": rounds, "record_rounds": [rounds]},
        attacker=attacker)


def federate(exp: Experiment, run_dir) -> dict:
    """The experiment's strategy and participants, one round after another, without Flower's
    runtime; returns run.json."""
    strategy = build_strategy(exp, run_dir)
    n = exp.federation.num_participants
    manager, proxies = client_manager(n)
    states = [RecordDict() for _ in range(n)]
    params = strategy.initialize_parameters(manager)
    strategy.evaluate(0, params)
    for server_round in range(1, exp.federation.rounds + 1):
        results = []
        for proxy, ins in strategy.configure_fit(server_round, params, manager):
            pid = int(proxy.cid) - 1000
            weights, count, metrics = Participant(pid, None, 1, states[pid], str(run_dir)).fit(
                to_arrays(ins.parameters), ins.config)
            results.append((proxy, FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(weights),
                                          count, metrics)))
        params, _ = strategy.aggregate_fit(server_round, results, [])
        strategy.evaluate(server_round, params)
    return read_json(run_dir / RUN_FILE)


def final_accuracy(record: dict) -> float:
    return record["history"][-1]["test_accuracy"]


def test_default_ascent_keeps_a_tiny_federation_within_a_few_points_of_passive(tmp_path):
    passive = federate(tiny("passive", {"kind": "global", "mode": "passive"}), tmp_path / "p")
    relative = federate(tiny("relative", {"kind": "global", "mode": "gradient-ascent"}),
                        tmp_path / "r")
    literal = federate(tiny("absolute", {"kind": "global", "mode": "gradient-ascent",
                                         "step": "absolute"}), tmp_path / "a")
    p, r, a = (final_accuracy(x) for x in (passive, relative, literal))
    assert p > 0.2  # the federation learns at all
    assert abs(p - r) <= 0.04, (p, r, a)
    assert a < p - 0.1, (p, r, a)  # the paper's gamma = 1 on this model: the test can tell
    for entry in relative["rounds"]:
        step = entry["ascent"]["global"]
        assert step["step_norm"] <= ASCENT_FRACTION * step["update_norm"] * (1 + 1e-6)
        assert step["step_norm"] > 0.5 * ASCENT_FRACTION * step["update_norm"]
    assert "ascent" not in passive["rounds"][0]


def test_isolated_victims_model_accuracy_is_kept_per_round(tmp_path):
    exp = tiny("iso", {"kind": "global", "mode": "isolating-gradient-ascent", "targets": [0]},
               rounds=3)
    record = federate(exp, tmp_path / "i")
    rounds = record["isolated"]["0"]
    assert [e["round"] for e in rounds] == [1, 2, 3]
    assert all(0 <= e["test_accuracy"] <= 1 for e in rounds)
    assert set(record["rounds"][1]["ascent"]) == {"0"}  # the isolated model is ascended
