"""The active attackers' ascent step: relative to the round's update, on the targets and the
known records, and a federation that stays useful under the default step (driven without Ray:
the real strategy and participants, by hand)."""

import math

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, RecordDict, Status, ndarrays_to_parameters
from flwr.common import parameters_to_ndarrays as to_arrays
from pydantic import ValidationError

from clients.client_app import Participant
from fedattack.active import GradientAscent, ascended_records, ascent_for
from fedattack.attacks.ascent_response import responses
from fedattack.attacks.observed import federated_rounds, per_record_losses
from fedattack.config import ASCENT_FRACTION, AttackerConfig, Experiment, parse_experiment
from fedattack.data import Knowledge, load_knowledge, load_membership
from fedattack.experiment import (
    RUN_FILE,
    SNAPSHOT_DIR,
    experiment_dataset,
    initial_model,
    prepare_run,
)
from fedattack.io import read_json
from fedattack.membership import AttackContext, attack_input, evaluate_in_run
from fedattack.snapshots import SnapshotStore
from fedattack.training import get_weights, set_weights
from strategies.inner import weighted_average
from strategies.server_app import attacker_options, build_strategy
from tests.fakes import tiny_data
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
    assert ascent.loss_and_grads(moved)[0] > ascent.last["ascended_loss"]


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

def tiny(name: str, attacker: dict | None, rounds: int = 8, record_rounds=None,
         attack: dict | None = None) -> Experiment:
    return Experiment(
        name=name, seed=3, scenario="federated",
        data={"dataset": "purchase100-synth", "num_records": 3000, "train_size": 300,
              "nonmember_size": 1000,
              "knowledge": {"train_members": 50, "train_nonmembers": 50, "test_members": 50,
                            "test_nonmembers": 50}},
        model={"arch": "purchase-fc", "activation": "tanh"},
        training={"optimizer": "adam", "lr": 0.001, "batch_size": 64},
        federation={"num_participants": 4, "rounds": rounds,
                    "record_rounds": record_rounds or [rounds]},
        attacker=attacker, attack=attack)


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


# ------------------------------------------------------------------ what is ascended

def knowledge(victim, members, nonmembers, targets):
    return Knowledge(victim, np.array(members), np.array(nonmembers), np.array([], int),
                     np.array(targets))


def test_ascended_records_are_every_target_and_known_record_with_no_membership_label():
    a = knowledge("participant-0", [4, 9], [1, 7], [2, 3, 8])
    b = knowledge("participant-1", [5], [1, 6], [0, 3])
    np.testing.assert_array_equal(ascended_records([a]), [1, 2, 3, 4, 7, 8, 9])
    np.testing.assert_array_equal(ascended_records([a, b]), range(10))
    swapped = knowledge("participant-0", [1, 7], [4, 9], [2, 3, 8])  # members <-> non-members
    np.testing.assert_array_equal(ascended_records([swapped]), ascended_records([a]))


def test_aggregator_ascends_the_targets_and_the_known_records(tmp_path):
    exp = tiny("ga", {"kind": "global", "mode": "gradient-ascent", "targets": [0, 1]}, rounds=2)
    prepared = prepare_run(exp, tmp_path)
    dataset, splits = prepared.dataset, prepared.splits
    ascend = attacker_options(exp, dataset, splits)["ascend"]
    want = np.unique(np.concatenate([np.r_[v.targets(), v.known_members, v.known_nonmembers]
                                     for v in splits.victims]))
    x, y = dataset.batch(want)
    assert torch.equal(ascend.inputs, x) and torch.equal(ascend.labels, y)


def loss_rise(exp, run_dir, server_round: int, records: dict[str, np.ndarray]) -> dict:
    """Mean rise of each set's loss from the round's plain average of the uploads (equal
    partitions: FedAvg's weights are equal) to the global model the aggregator recorded."""
    dataset = experiment_dataset(exp)
    view = SnapshotStore(run_dir / SNAPSHOT_DIR).view("global")
    uploads = [view.read_arrays(r) for r in view.records(kind="upload", round=server_round)]
    average, sent = initial_model(exp, dataset), initial_model(exp, dataset)
    set_weights(average, weighted_average([(u, 1) for u in uploads]))
    set_weights(sent, view.read_arrays(view.records(kind="global", round=server_round)[0]))
    return {name: float(np.diff(per_record_losses([average, sent], dataset, idx, "cpu"),
                                axis=0).mean())
            for name, idx in records.items()}


@pytest.fixture(scope="module")
def ascended_run(tmp_path_factory):
    """A tiny federation under the global gradient-ascent attacker of participant 0, every
    round from 2 recorded, ready for the ascent-response attack (no Ray)."""
    run_dir = tmp_path_factory.mktemp("ascended")
    exp = tiny("ga", {"kind": "global", "mode": "gradient-ascent", "targets": [0]}, rounds=5,
               record_rounds=[2, 3, 4, 5],
               attack={"attacks": ["ascent-response", "threshold-loss"]})
    federate(exp, run_dir)
    return exp, run_dir


def test_known_records_receive_the_ascent_as_the_targets_do(ascended_run):
    """On the recorded snapshots: the ascent raises the known records' loss as much as the
    targets' (before, only as much as that of held-out records the attacker never knew)."""
    exp, run_dir = ascended_run
    k = load_knowledge(run_dir, "participant-0")
    known = np.r_[k.known_members, k.known_nonmembers]
    untouched = np.setdiff1d(load_membership(run_dir).nonmembers, np.r_[k.targets, known])
    rises = [loss_rise(exp, run_dir, t, {"targets": k.targets, "known": known,
                                         "untouched": untouched[:300]}) for t in (2, 3, 4)]
    for rise in rises:
        assert rise["known"] > 0 and rise["targets"] > 0, rise
    known, targets, untouched = (np.mean([r[s] for r in rises])
                                 for s in ("known", "targets", "untouched"))
    assert known > 0.7 * targets, rises
    assert known > 1.5 * untouched, rises


# ------------------------------------------------------------------ the ascent-response attack

def test_responses_are_log_ratios_or_differences_of_the_two_losses():
    start, upload = [[2.0, 1.0], [4.0, 0.5]], [[0.5, 1.0], [1.0, 1.0]]
    np.testing.assert_allclose(responses(start, upload),
                               [[math.log(4), 0.0], [math.log(4), math.log(0.5)]])
    np.testing.assert_allclose(responses(start, upload, "difference"), [[1.5, 0.0], [3.0, -0.5]])
    # a loss that underflowed to 0 is a finite (very large) response, not inf or nan
    (zero,) = responses([[1.0]], [[0.0]])[0]
    assert math.isfinite(zero) and zero > 700
    with pytest.raises(ValueError, match="differ in shape"):
        responses([[1.0, 2.0]], [[1.0]])
    with pytest.raises(ValueError, match="accepted: log-ratio, difference"):
        responses([[1.0]], [[1.0]], "ratio")


def test_ascent_response_attack_needs_known_records_and_the_aggregator():
    attack = {"attacks": ["ascent-response"]}
    with pytest.raises(ValidationError, match="ascent-response attack needs known members"):
        Experiment(name="x", scenario="federated", attack=attack,
                   data={"dataset": "purchase100-synth", "knowledge": {"train_members": 0}},
                   attacker={"kind": "global", "mode": "gradient-ascent"})
    with pytest.raises(ValidationError, match="is for the global attacker"):
        Experiment(name="x", scenario="federated", attack=attack,
                   attacker={"kind": "local", "mode": "gradient-ascent"})


def test_ascent_response_scores_targets_without_reading_their_membership(ascended_run):
    """Run with the ground truth moved away (an attack reading it fails); then evaluated: it
    separates members from non-members and its threshold is the known records' best."""
    exp, run_dir = ascended_run
    dataset = experiment_dataset(exp)
    truth = run_dir / "splits" / "membership.npz"
    hidden = truth.rename(run_dir / "membership.away")
    try:
        runner = AttackContext(attack_input(exp, run_dir, dataset, "participant-0",
                                            log=lambda _: None))
        k = runner.knowledge
        outcome = runner.run("ascent-response")
    finally:
        hidden.rename(truth)
    # by hand: the mean over rounds of log(loss at the model trained from / loss at the upload)
    seen = federated_rounds(runner, with_others=False)
    by_hand = np.mean([[1, -1] @ np.log(per_record_losses([start, upload], dataset, k.targets,
                                                          "cpu"))
                       for start, upload in zip(seen.victim_start, seen.victim_uploads,
                                                strict=True)], axis=0)
    np.testing.assert_allclose(outcome.scores, by_hand, rtol=1e-12)
    assert runner.obs.labels == ["round-2", "round-3", "round-4", "round-5"]
    assert runner.obs.rounds == (2, 3, 4, 5)
    assert outcome.scores.dtype == np.float64 and outcome.scores.shape == k.targets.shape
    assert outcome.extra["rounds"] == [2, 3, 4, 5]
    assert outcome.extra["ascended_start"] == [True] * 4
    assert outcome.extra["statistic"] == "log-ratio"
    assert all(r > 0 for r in outcome.extra["mean_response_known"])  # training lowers losses
    metrics = evaluate_in_run(run_dir, k, outcome, (exp.seed, 0)).figures
    assert metrics.auc > 0.6, metrics  # an overfitting 300-record participant leaks
    assert outcome.extra["known_auc"] > 0.6
    assert np.isfinite(outcome.threshold)
    assert 0.5 < metrics.attack_accuracy, metrics


# ------------------------------------------------------------------ a real Flower simulation

SIMULATED = {
    "campaign": "ascent-response",
    "base": {
        "seed": 4,
        "data": tiny_data(300, 50, 50, num_records=3000, nonmember=1000),
        "model": {"arch": "purchase-fc", "activation": "tanh"},
        "training": {"optimizer": "adam", "lr": 0.001, "batch_size": 64},
        "federation": {"num_participants": 3, "rounds": 4, "record_rounds": [2, 3, 4]},
        "attacker": {"kind": "global", "mode": "gradient-ascent", "targets": [0]},
        "attack": {"attacks": ["ascent-response", "threshold-loss"]},
    },
    "experiments": [{"name": "global-gradient-ascent"}],
}


@pytest.mark.slow  # about 2 minutes on 2 shared cores; test_ascent_response_scores_targets_...
def test_ascent_response_through_a_flower_simulation(tmp_path):  # ...covers it without Ray
    """The active aggregator in a real simulation ascends the known records with the targets
    (on the recorded snapshots), and the ascent-response attack scores its victim."""
    import yaml

    from fedattack.campaign import load_campaign, run_campaign

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SIMULATED))
    records = run_campaign(load_campaign(path), tmp_path / "out", show_progress=False)
    row = next(r for r in records if r["attack"] == "ascent-response")
    assert (row["attacker"], row["mode"], row["knowledge"]) == (
        "global", "gradient-ascent", "supervised")
    assert row["snapshots"] == "round-2,round-3,round-4"
    low, high = row["auc_ci"]
    assert 0.5 < low <= row["auc"] <= high, row  # beyond chance on 50 + 50 targets
    run_dir = tmp_path / "out" / "global-gradient-ascent"
    exp = parse_experiment(yaml.safe_load((run_dir / "config.yaml").read_text()))
    k = load_knowledge(run_dir, "participant-0")
    known = np.r_[k.known_members, k.known_nonmembers]
    untouched = np.setdiff1d(load_membership(run_dir).nonmembers, np.r_[k.targets, known])
    rise = loss_rise(exp, run_dir, 3, {"targets": k.targets, "known": known,
                                       "untouched": untouched[:300]})
    assert rise["known"] > max(0.7 * rise["targets"], 1.5 * rise["untouched"]) > 0, rise


# ------------------------------------------------------------------ paired differences (docs)

def test_paired_auc_difference_of_a_row_with_itself_and_with_a_perfect_one(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "docs" / "results" / "table10" / "paired.py"
    spec = importlib.util.spec_from_file_location("paired", path)
    paired = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paired)
    labels = np.r_[np.ones(20, int), np.zeros(20, int)]
    noise = np.random.default_rng(0).normal(size=40)
    assert paired.paired_difference(labels, noise, noise) == {"difference": 0.0, "ci": [0.0, 0.0]}
    perfect = paired.paired_difference(labels, labels + 0.1 * noise, noise)
    assert perfect["difference"] > 0.3 and 0 < perfect["ci"][0] < perfect["ci"][1] <= 1
    (tmp_path / "global-isolating" / "attacks").mkdir(parents=True)
    assert paired.twins("local-gradient-ascent", tmp_path) == ["local-passive"]
    assert paired.twins("global-gradient-ascent", tmp_path) == ["global-passive"]
    assert paired.twins("global-isolating-gradient-ascent", tmp_path) == [
        "global-passive", "global-isolating"]
