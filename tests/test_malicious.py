"""The federated attackers without Ray: the malicious aggregator driven by hand-made proxies,
gradient ascent on a real model, and the malicious participant's upload and observations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flwr.common import RecordDict, ndarrays_to_parameters, parameters_to_ndarrays

from clients.honest import HonestClient
from clients.local_attacker import STATE_KEY, LocalAttacker, weights_digest
from fedattack import protocol
from fedattack.active import GradientAscent
from fedattack.config import AttackerConfig, Experiment
from fedattack.data import knowledge_of
from fedattack.experiment import SNAPSHOT_DIR, cached_dataset, experiment_splits, initial_model
from fedattack.snapshots import SnapshotStore
from fedattack.training import get_weights, set_weights
from strategies.inner import weighted_average
from strategies.malicious import MaliciousAggregator
from tests.flower_fakes import client_manager, fit_res

NAMES = ["w", "b"]


def weights(rng):
    return [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)]


def aggregator(tmp_path, mode="passive", isolated=(), ascend=None, **attacker):
    rng = np.random.default_rng(0)
    initial = weights(rng)
    strategy = MaliciousAggregator(
        attacker=AttackerConfig(mode=mode, targets=sorted(isolated) or "all", **attacker),
        isolated=set(isolated), ascend=ascend,
        store=SnapshotStore(tmp_path / "snapshots"), record_round=lambda r: True,
        weight_names=NAMES, fit_config=lambda r: {"server-round": r},
        partition_sizes=[100] * 3,
        initial_parameters=ndarrays_to_parameters(initial), min_fit_clients=3,
        min_available_clients=3)
    return strategy, rng


def play_round(strategy, manager, proxies, server_round, parameters, uploads):
    """configure_fit, then aggregate_fit of uploads[i] = (weights, n) from partition i."""
    sent = strategy.configure_fit(server_round, parameters, manager)
    results = [(proxies[pid], fit_res(w, n, pid)) for pid, (w, n) in enumerate(uploads)]
    new, _ = strategy.aggregate_fit(server_round, results, [])
    return {p.cid: parameters_to_ndarrays(ins.parameters) for p, ins in sent}, new


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_isolated_participant_gets_its_own_model_and_others_the_rest(tmp_path):
    strategy, rng = aggregator(tmp_path, "isolating", isolated={0}, isolate_from=2)
    manager, proxies = client_manager(3)
    params = strategy.initialize_parameters(manager)
    round1 = [(weights(rng), n) for n in (10, 20, 30)]
    sent1, params = play_round(strategy, manager, proxies, 1, params, round1)
    assert all(len(w) == 2 for w in sent1.values())
    others = weighted_average([round1[1], round1[2]])  # the isolated upload is left out
    assert_same(parameters_to_ndarrays(params), others)
    round2 = [(weights(rng), n) for n in (10, 20, 30)]
    sent2, params = play_round(strategy, manager, proxies, 2, params, round2)
    assert_same(sent2[proxies[0].cid], round1[0][0])  # its own last model
    for p in proxies[1:]:
        assert_same(sent2[p.cid], others)
    (rec,) = strategy.store.records(view="global", kind="sent", round=2, partition=0)
    assert_same(strategy.store.read_arrays(rec), round1[0][0])
    sent3, _ = play_round(strategy, manager, proxies, 3, params, round2)
    assert_same(sent3[proxies[0].cid], round2[0][0])


def test_passive_aggregator_is_fedavg_and_records_uploads_bit_exact(tmp_path):
    strategy, rng = aggregator(tmp_path)
    manager, proxies = client_manager(3)
    uploads = [(weights(rng), n) for n in (5, 5, 10)]
    sent, new = play_round(strategy, manager, proxies, 1, strategy.initialize_parameters(manager),
                           uploads)
    assert_same(parameters_to_ndarrays(new), weighted_average(uploads))
    for pid, (w, _) in enumerate(uploads):
        (rec,) = strategy.store.records(view="global", kind="upload", round=1, partition=pid)
        assert_same(strategy.store.read_arrays(rec), w)
    assert not strategy.store.records(view="global", kind="sent")


def test_gradient_ascent_moves_the_broadcast_only_at_ascent_rounds(tmp_path):
    shift = [np.full((3, 4), 0.5, np.float32), np.full((4,), -1.0, np.float32)]
    ascend = lambda ws, start: [w + s for w, s in zip(ws, shift, strict=True)]  # noqa: E731
    strategy, rng = aggregator(tmp_path, "gradient-ascent", ascend=ascend, ascent_rounds=[2])
    manager, proxies = client_manager(3)
    params = strategy.initialize_parameters(manager)
    uploads = [(weights(rng), 1) for _ in range(3)]
    _, params = play_round(strategy, manager, proxies, 1, params, uploads)
    assert_same(parameters_to_ndarrays(params), weighted_average(uploads))
    _, params = play_round(strategy, manager, proxies, 2, params, uploads)
    assert_same(parameters_to_ndarrays(params), ascend(weighted_average(uploads), None))
    (rec,) = strategy.store.records(view="global", kind="global", round=2)
    assert_same(strategy.store.read_arrays(rec), ascend(weighted_average(uploads), None))


def test_isolating_ascent_applies_to_the_isolated_model(tmp_path):
    ascend = lambda ws, start: [w * 2 for w in ws]  # noqa: E731
    strategy, rng = aggregator(tmp_path, "isolating-gradient-ascent", isolated={1},
                               ascend=ascend, isolate_from=2)
    manager, proxies = client_manager(3)
    uploads = [(weights(rng), 1) for _ in range(3)]
    _, params = play_round(strategy, manager, proxies, 1, strategy.initialize_parameters(manager),
                           uploads)
    assert_same(parameters_to_ndarrays(params), weighted_average([uploads[0], uploads[2]]))
    sent, _ = play_round(strategy, manager, proxies, 2, params, uploads)
    assert_same(sent[proxies[1].cid], ascend(uploads[1][0], None))


def test_bad_upload_of_isolated_participant_is_refused_and_the_round_goes_on(tmp_path):
    strategy, rng = aggregator(tmp_path, "isolating", isolated={0}, isolate_from=2)
    manager, proxies = client_manager(3)
    params = strategy.initialize_parameters(manager)
    good = [(weights(rng), 1) for _ in range(3)]
    _, params = play_round(strategy, manager, proxies, 1, params, good)
    bad = [([np.full((3, 4), np.nan, np.float32), good[0][0][1]], 1), good[1], good[2]]
    sent, new = play_round(strategy, manager, proxies, 2, params, bad)
    assert "NaN" in strategy.round_logs[-1].rejected[0]["reason"]
    assert_same(parameters_to_ndarrays(new), weighted_average([good[1], good[2]]))
    sent3, _ = play_round(strategy, manager, proxies, 3, new, good)
    assert_same(sent3[proxies[0].cid], good[0][0])  # its last *accepted* model
    assert strategy.store.records(view="global", kind="upload", round=1, partition=0)
    assert not strategy.store.records(view="global", kind="upload", round=2, partition=0)


# ------------------------------------------------------------------ gradient ascent, eq. 2

def small_fc_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def test_gradient_ascent_raises_the_target_loss_by_the_first_order_amount():
    model = small_fc_model()
    x, y = torch.randn(20, 8), torch.randint(0, 4, (20,))
    before = get_weights(model)
    ascent = GradientAscent(small_fc_model(), x, y, gamma=1e-3)
    loss0, grads = ascent.loss_and_grads(before)
    expected = 1e-3 * sum(float((g ** 2).sum()) for g in grads.values())
    loss1, _ = ascent.loss_and_grads(ascent(before))
    assert loss1 > loss0
    assert (loss1 - loss0) == pytest.approx(expected, rel=0.05)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in zip(
        model.state_dict(), ascent(before), strict=True)})
    with torch.no_grad():
        assert float(F.cross_entropy(model(x), y)) == pytest.approx(loss1, rel=1e-5)


def test_gradient_ascent_leaves_buffers_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6),
                                torch.nn.Linear(6, 3))
    model.eval()
    ascent = GradientAscent(model, torch.randn(5, 4), torch.randint(0, 3, (5,)), gamma=0.5)
    before = get_weights(model)
    after = ascent(before)
    names = list(model.state_dict())
    for name, b, a in zip(names, before, after, strict=True):
        if "running" in name or "num_batches" in name:
            np.testing.assert_array_equal(a, b)
        else:
            assert not np.array_equal(a, b), name


# ------------------------------------------------------------------ the malicious participant

EXP = Experiment(
    name="local", seed=2,
    data={"dataset": "purchase100-synth", "num_records": 2000, "train_size": 200,
          "nonmember_size": 500,
          "knowledge": {"train_members": 50, "train_nonmembers": 50, "test_members": 40,
                        "test_nonmembers": 40}},
    federation={"num_participants": 3, "rounds": 3, "record_rounds": [2, 3]},
    attacker={"kind": "local", "mode": "gradient-ascent", "participant": 1, "step": "absolute",
              "gamma": 0.7},
)


def fit_config(exp, server_round):
    return {protocol.SERVER_ROUND: server_round, protocol.LR: exp.training.lr,
            protocol.EXPERIMENT: exp.model_dump_json()}


def test_local_attacker_uploads_its_model_moved_up_the_target_and_known_records_loss(tmp_path):
    dataset = cached_dataset("purchase100-synth", None, 2000)
    received = get_weights(initial_model(EXP, dataset))
    config = fit_config(EXP, 2)
    honest, n, _ = HonestClient(1).fit(received, config)
    upload, n_up, metrics = LocalAttacker(1, state=RecordDict(), run_dir=str(tmp_path)).fit(
        received, config)
    assert (n_up, metrics[protocol.PARTITION_ID]) == (n, 1)
    splits = experiment_splits(EXP, dataset)
    k = knowledge_of(splits, "others-of-1")
    known = np.r_[k.known_members, k.known_nonmembers]
    x, y = dataset.batch(np.unique(np.r_[k.targets, known]))
    expected = GradientAscent(initial_model(EXP, dataset), x, y, 0.7)(honest)
    for got, want in zip(upload, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not np.allclose(upload[0], honest[0])
    # the known records' loss rises with the targets', beyond that of records it never knew
    untouched = np.setdiff1d(splits.nonmembers, np.r_[k.targets, known])
    rise = {name: mean_loss(upload, idx, dataset) - mean_loss(honest, idx, dataset)
            for name, idx in (("targets", k.targets), ("known", known),
                              ("untouched", untouched))}
    assert rise["known"] > max(0.7 * rise["targets"], 1.5 * rise["untouched"]) > 0, rise


def mean_loss(weights, indices, dataset) -> float:
    model = initial_model(EXP, dataset)
    set_weights(model, weights)
    with torch.no_grad():
        x, y = dataset.batch(indices)
        return float(F.cross_entropy(model.eval()(x), y))


def test_local_attacker_observes_only_the_models_it_receives(tmp_path):
    dataset = cached_dataset("purchase100-synth", None, 2000)
    state = RecordDict()
    models = {}
    for server_round in (1, 2, 3):
        torch.manual_seed(server_round)
        models[server_round] = get_weights(initial_model(EXP, dataset))
        LocalAttacker(1, state=state, run_dir=str(tmp_path)).fit(
            models[server_round], fit_config(EXP, server_round))
    store = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    assert store.views() == ["local-1"]
    view = store.view("local-1")
    seen = [(r.kind, r.round, r.partition) for r in view.records()]
    assert seen == [("sent", 2, 1), ("sent", 3, 1)]
    for r in (2, 3):
        assert_same(view.read_arrays(view.records(round=r)[0]), models[r])
    seen = state[STATE_KEY]
    assert list(seen["rounds"]) == [2, 3]
    assert list(seen["sha256"]) == [weights_digest(models[2]), weights_digest(models[3])]


def test_aggregator_ascent_raises_the_broadcast_target_loss_to_first_order(tmp_path):
    model = small_fc_model()
    x, y = torch.randn(30, 8), torch.randint(0, 4, (30,))
    ascent = GradientAscent(small_fc_model(), x, y, gamma=1e-3)
    names = list(model.state_dict())
    strategy = MaliciousAggregator(
        attacker=AttackerConfig(mode="gradient-ascent", step="absolute", gamma=1e-3),
        isolated=set(),
        ascend=ascent, store=SnapshotStore(tmp_path / "s"), record_round=lambda r: False,
        weight_names=names, fit_config=lambda r: {}, partition_sizes=[10, 10],
        initial_parameters=ndarrays_to_parameters(get_weights(model)), min_fit_clients=2,
        min_available_clients=2)
    manager, proxies = client_manager(2)
    rng = np.random.default_rng(1)
    uploads = [([w + rng.normal(scale=0.1, size=w.shape).astype(np.float32)
                 for w in get_weights(model)], 1) for _ in range(2)]
    _, new = play_round(strategy, manager, proxies, 1, strategy.initialize_parameters(manager),
                        uploads)
    average = weighted_average(uploads)
    loss_avg, grads = ascent.loss_and_grads(average)
    loss_sent, _ = ascent.loss_and_grads(parameters_to_ndarrays(new))
    expected = 1e-3 * sum(float((g ** 2).sum()) for g in grads.values())
    assert loss_sent - loss_avg == pytest.approx(expected, rel=0.05)
