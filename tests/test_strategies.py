"""Recording and malice wrap any Flower strategy (`federation.strategy`), without Ray."""

import numpy as np
import pytest
import torch
from flwr.common import (
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.strategy import FedAdam

from fedattack.config import AttackerConfig, ConfigError, StrategyConfig, parse_experiment
from fedattack.snapshots import SnapshotStore
from fedattack.training import train_epoch
from strategies.inner import STRATEGIES, inner_strategy, weighted_average
from strategies.malicious import MaliciousAggregator
from strategies.recording import RecordingStrategy
from tests.fakes import ArrayDataset
from tests.flower_fakes import client_manager, fit_res

NAMES = ["w", "b"]


def weights(rng):
    return [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]


def wrapped(tmp_path, cls, inner, **options):
    return cls(inner=inner, store=SnapshotStore(tmp_path / "snapshots"),
               record_round=lambda r: True, weight_names=NAMES, partition_sizes=[100] * 3,
               **options)


def play_round(strategy, manager, proxies, server_round, parameters, uploads):
    sent = strategy.configure_fit(server_round, parameters, manager)
    results = [(proxies[pid], fit_res(w, n, pid)) for pid, (w, n) in enumerate(uploads)]
    new, _ = strategy.aggregate_fit(server_round, results, [])
    return {p.cid: parameters_to_ndarrays(ins.parameters) for p, ins in sent}, new


def same(a, b, exact=True):
    for x, y in zip(a, b, strict=True):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_fedadam_under_the_isolating_ascending_aggregator_is_flowers_fedadam_on_the_others(
        tmp_path):
    rng = np.random.default_rng(0)
    initial = weights(rng)
    ascend = lambda ws, start: [w + 1.0 for w in ws]  # noqa: E731 (a visible, known ascent)
    options = dict(initial_parameters=ndarrays_to_parameters(initial), min_fit_clients=3,
                   min_available_clients=3, on_fit_config_fn=lambda r: {"server-round": r})
    strategy = wrapped(tmp_path, MaliciousAggregator, inner_strategy("fedadam", **options),
                       attacker=AttackerConfig(mode="isolating-gradient-ascent", targets=[0],
                                               isolate_from=2),
                       isolated={0}, ascend=ascend)
    reference = FedAdam(**options)  # Flower's own, fed the non-isolated uploads only
    manager, proxies = client_manager(3)
    params = strategy.initialize_parameters(manager)
    last = None
    for server_round in (1, 2, 3):
        uploads = [(weights(rng), n) for n in (10, 20, 30)]
        sent, params = play_round(strategy, manager, proxies, server_round, params, uploads)
        others = [(proxies[pid], FitRes(Status(Code.OK, ""), ndarrays_to_parameters(w), n, {}))
                  for pid, (w, n) in enumerate(uploads) if pid != 0]
        want, _ = reference.aggregate_fit(server_round, others, [])
        # the same model, in the model's float32 (Flower's FedAdam computes in float64)
        same(parameters_to_ndarrays(params),
             [w.astype(np.float32) for w in parameters_to_ndarrays(want)])
        if last is not None:  # the isolated participant gets its own last model, ascended
            same(sent[proxies[0].cid], ascend(last[0][0], None))
        last = uploads
    # the recorded view holds every participant's upload, the isolated one's too
    assert {r.partition for r in strategy.store.records(view="global", kind="upload",
                                                          round=3)} == {0, 1, 2}


def test_passive_recording_of_fedavg_is_the_float64_partition_ordered_average(tmp_path):
    rng = np.random.default_rng(1)
    options = dict(initial_parameters=ndarrays_to_parameters(weights(rng)), min_fit_clients=3,
                   min_available_clients=3)
    strategy = wrapped(tmp_path, RecordingStrategy, inner_strategy("fedavg", **options))
    manager, proxies = client_manager(3)
    uploads = [(weights(rng), n) for n in (5, 7, 11)]
    strategy.configure_fit(1, strategy.initialize_parameters(manager), manager)
    results = [(proxies[pid], fit_res(w, n, pid)) for pid, (w, n) in enumerate(uploads)]
    new, metrics = strategy.aggregate_fit(1, results[::-1], [])  # answers in any order
    same(parameters_to_ndarrays(new), weighted_average(uploads))
    assert metrics == {"accepted": 3}
    assert repr(strategy) == "RecordingStrategy(OrderedFedAvg())"


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_runs_two_rounds_under_the_recorder(tmp_path, name):
    rng = np.random.default_rng(2)
    config = StrategyConfig(name=name, **({"proximal_mu": 0.1} if name == "fedprox" else {}))
    inner = inner_strategy(config, initial_parameters=ndarrays_to_parameters(weights(rng)),
                           min_fit_clients=3, min_available_clients=3,
                           on_fit_config_fn=lambda r: {"server-round": r})
    assert isinstance(inner, STRATEGIES[name])
    strategy = wrapped(tmp_path, RecordingStrategy, inner)
    manager, proxies = client_manager(3)
    params = strategy.initialize_parameters(manager)
    for server_round in (1, 2):
        sent = strategy.configure_fit(server_round, params, manager)
        assert len(sent) == 3
        if name == "fedprox":  # Flower's FedProx tells the clients their proximal_mu
            assert all(ins.config["proximal_mu"] == 0.1 for _, ins in sent)
        results = [(proxies[pid], fit_res(weights(rng), 10, pid)) for pid in range(3)]
        params, _ = strategy.aggregate_fit(server_round, results, [])
        assert all(np.isfinite(w).all() for w in parameters_to_ndarrays(params))


def test_strategy_config_reads_a_name_or_parameters_and_refuses_the_wrong_ones():
    assert StrategyConfig.model_validate("fedyogi").name == "fedyogi"
    assert StrategyConfig(name="fedadam", eta=0.01).options() == {"eta": 0.01}
    base = {"name": "s", "scenario": "federated", "data": {"dataset": "purchase100-synth"}}
    with pytest.raises(ConfigError, match="eta is a parameter of fedadam, fedyogi, fedadagrad, "
                                          "not fedavg"):
        parse_experiment({**base, "federation": {"strategy": {"name": "fedavg", "eta": 0.1}}})
    with pytest.raises(ConfigError, match="fedprox needs proximal_mu"):
        parse_experiment({**base, "federation": {"strategy": "fedprox"}})
    with pytest.raises(ConfigError, match="fedprox's proximal term is not implemented under "
                                          "DP-SGD"):
        parse_experiment({**base, "privacy": {"noise_multiplier": 1.0},
                          "federation": {"strategy": {"name": "fedprox", "proximal_mu": 0.1}}})
    with pytest.raises(ConfigError, match="fedsgd"):
        parse_experiment({**base, "federation": {"strategy": "fedsgd"}})


def test_the_proximal_term_is_the_gradient_of_mu_half_the_squared_distance():
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    data = ArrayDataset(x, y, 3)
    start = torch.nn.Linear(4, 3)
    with torch.no_grad():
        start.weight.add_(1.0)  # far from where the data would take it
    anchor = [p.detach().clone() + 0.5 for p in start.parameters()]  # a different global model

    def one_step(proximal):
        model = torch.nn.Linear(4, 3)
        model.load_state_dict(start.state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        train_epoch(model, data, np.arange(8), opt, 8, torch.device("cpu"),
                    torch.Generator().manual_seed(0), proximal=proximal)
        return [p.detach() for p in model.parameters()]

    plain, prox = one_step(None), one_step((0.3, anchor))
    for p0, a, p, q in zip(start.parameters(), anchor, plain, prox, strict=True):
        # SGD: q = p - lr * mu * (w - anchor), w the starting weights
        torch.testing.assert_close(q, p - 0.1 * 0.3 * (p0.detach() - a))


def tiny_federation(strategy, attacker):
    return parse_experiment({
        "name": "strategy", "seed": 4, "scenario": "federated",
        "data": {"dataset": "purchase100-synth", "num_records": 2000, "train_size": 150,
                 "nonmember_size": 400,
                 "knowledge": {"train_members": 40, "train_nonmembers": 40, "test_members": 40,
                               "test_nonmembers": 40}},
        "federation": {"num_participants": 3, "rounds": 3, "record_rounds": [2, 3],
                       "strategy": strategy},
        "attacker": attacker,
        "attack": {"attacks": ["threshold-loss"]}})


def test_fedadam_under_an_isolating_ascending_aggregator_in_a_flower_simulation(tmp_path):
    from fedattack.runner import run_experiment

    exp = tiny_federation({"name": "fedadam", "eta": 0.01},
                          {"kind": "global", "mode": "isolating-gradient-ascent", "targets": [1]})
    record, results = run_experiment(exp, tmp_path / "run", show_progress=False)
    assert record["status"] == "finished" and not record["refusals"]
    assert [r["round"] for r in record["rounds"]] == [1, 2, 3]
    assert all(r["accepted"] == [0, 1, 2] for r in record["rounds"])  # float32 kept every round
    (row,) = results
    assert row["victim"] == "participant-1" and 0 <= row["auc"] <= 1


@pytest.mark.slow
def test_fedprox_with_a_local_ascending_attacker_in_a_flower_simulation(tmp_path):
    from fedattack.runner import run_experiment

    exp = tiny_federation({"name": "fedprox", "proximal_mu": 0.5},
                          {"kind": "local", "mode": "gradient-ascent", "participant": 0})
    record, results = run_experiment(exp, tmp_path / "run", show_progress=False)
    assert record["status"] == "finished" and not record["refusals"]
    assert results[0]["attacker"] == "local"


# -- what the inner strategy returns is checked (issue 25, item 5) ---------------------------

def adam_round(tmp_path, uploads_of):
    """Rounds of FedAdam under the recorder; uploads_of(round, broadcast) -> two uploads."""
    failures = []
    rng = np.random.default_rng(3)
    initial = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    strategy = RecordingStrategy(
        store=SnapshotStore(tmp_path / "snapshots"), record_round=lambda r: True,
        weight_names=["w", "b"], partition_sizes=[100] * 2, on_failure=failures.append,
        inner=inner_strategy("fedadam", initial_parameters=ndarrays_to_parameters(initial)))
    manager, proxies = client_manager(2)
    params, models = strategy.initialize_parameters(manager), []
    for server_round in (1, 2, 3):
        strategy.configure_fit(server_round, params, manager)
        sent = parameters_to_ndarrays(params)
        results = [(proxies[i], fit_res(u, 10, i))
                   for i, u in enumerate(uploads_of(server_round, sent))]
        params, _ = strategy.aggregate_fit(server_round, results, [])
        if params is None:
            break
        models.append(parameters_to_ndarrays(params))
    return strategy, failures, models


def test_fedadam_frozen_by_one_extreme_upload_fails_the_run_in_one_line(tmp_path):
    def uploads(server_round, sent):
        honest = [w + 0.01 for w in sent]
        extreme = [np.full_like(w, 3e38) for w in sent] if server_round == 1 else honest
        return [honest, extreme]

    strategy, failures, models = adam_round(tmp_path, uploads)
    (error,) = failures
    assert models == [] and strategy.failure is error and "\n" not in str(error)
    assert str(error).startswith("round 1: FedAdam(accept_failures=True) returned the model it "
                                 "was sent, unchanged, although the average of its 2 accepted "
                                 "upload(s) (partitions 0, 1) moved")
    assert strategy.store.records(view="global", kind="global", round=1) == []


def test_fedadam_with_honest_uploads_moves_and_is_not_flagged(tmp_path):
    strategy, failures, models = adam_round(
        tmp_path, lambda r, sent: [[w + 0.01 for w in sent], [w - 0.005 for w in sent]])
    assert failures == [] and len(models) == 3
    assert not all(np.array_equal(a, b) for a, b in zip(models[0], models[1], strict=True))


def test_uploads_that_cancel_out_leave_fedavg_where_it_was_without_failing(tmp_path):
    rng = np.random.default_rng(4)
    strategy = wrapped(tmp_path, RecordingStrategy, inner_strategy(
        "fedavg", initial_parameters=ndarrays_to_parameters(
            [np.zeros((3, 4), np.float32), np.zeros(4, np.float32)])))
    manager, proxies = client_manager(3)
    params = strategy.initialize_parameters(manager)
    up = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    _, new = play_round(strategy, manager, proxies, 1, params,
                        [(up, 1), ([-u for u in up], 1), ([np.zeros_like(u) for u in up], 1)])
    assert strategy.failure is None
    same(parameters_to_ndarrays(new), parameters_to_ndarrays(params))


class NaNStrategy(FedAdam):
    def aggregate_fit(self, server_round, results, failures):
        arrays = parameters_to_ndarrays(results[0][1].parameters)
        return ndarrays_to_parameters([np.full_like(a, np.nan) for a in arrays]), {}


def test_a_non_finite_model_from_the_inner_strategy_fails_the_run(tmp_path):
    rng = np.random.default_rng(5)
    initial = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]
    strategy = wrapped(tmp_path, RecordingStrategy,
                       NaNStrategy(initial_parameters=ndarrays_to_parameters(initial)))
    manager, proxies = client_manager(3)
    params = strategy.initialize_parameters(manager)
    _, new = play_round(strategy, manager, proxies, 1, params,
                        [([w + 1 for w in initial], 1)] * 3)
    assert new is None
    assert "round 1: the new global model of FedAdam" in str(strategy.failure)
    assert "tensor 0 holds NaN or Inf" in str(strategy.failure)
