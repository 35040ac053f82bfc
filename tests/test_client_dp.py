"""Client-level DP with Flower's own wrappers (issue 14 item 4).

The clipping bound must hold on every update the average is made of (server-side: after the
wrapper clips; client-side: on every upload the aggregator receives, clipped by the client's mod),
the average must be unweighted (one participant moves it by at most clip / sampled), the noise
must have the standard deviation the mechanism promises, and epsilon is the RDP accountant's.
"""

import numpy as np
import pytest
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Message,
    MessageType,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, KEY_NORM_BIT
from opacus.accountants import RDPAccountant

from clients.client_app import client_clipping_mod
from fedattack import protocol
from fedattack.config import Experiment
from fedattack.experiment import SNAPSHOT_DIR
from fedattack.privacy import client_level_epsilon
from fedattack.simulation import run_federated
from fedattack.snapshots import SnapshotStore
from strategies.client_dp import client_dp
from strategies.inner import OrderedFedAvg
from strategies.recording import RecordingStrategy
from tests.fakes import tiny_data, tiny_experiment
from tests.flower_fakes import client_manager, fit_res

BASE = tiny_experiment(
    "client-dp", seed=2, data=tiny_data(200, 20, num_records=3000),
    federation={"num_participants": 4, "clients_per_round": 2, "rounds": 2,
                "client_dp": {"clipping": "client-fixed", "noise_multiplier": 0.5,
                              "clipping_norm": 0.05}})


def experiment(sampled=2, **dp) -> Experiment:
    fed = {**BASE["federation"], "client_dp": {**BASE["federation"]["client_dp"], **dp},
           "clients_per_round": sampled}
    return Experiment(**{**BASE, "federation": fed})


class Spy(OrderedFedAvg):
    """FedAvg that remembers what it was asked to average."""

    def aggregate_fit(self, server_round, results, failures):
        self.seen = [(parameters_to_ndarrays(r.parameters), r.num_examples) for _, r in results]
        return super().aggregate_fit(server_round, results, failures)


def drive(exp, uploads, initial, rounds=1):
    """The recorder around Flower's DP wrapper around a spy FedAvg, for `rounds` rounds of the
    same uploads (as offsets from the broadcast); returns (strategy, spy, aggregates)."""
    spy = Spy(initial_parameters=ndarrays_to_parameters(initial), fraction_evaluate=0.0,
              min_fit_clients=len(uploads), min_available_clients=len(uploads))
    strategy = RecordingStrategy(
        store=_Null(), record_round=lambda r: False, weight_names=["w"],
        partition_sizes=[100] * len(uploads), inner=client_dp(exp, spy),
        uniform_weights=True, noise_seed=exp.seed)
    manager, proxies = client_manager(len(uploads))
    params = strategy.initialize_parameters(manager)
    aggregates = []
    for t in range(1, rounds + 1):
        broadcast = parameters_to_ndarrays(params)
        strategy.configure_fit(t, params, manager)
        results = [(proxies[i], fit_res([broadcast[0] + u], 10 * (i + 1), i))
                   for i, u in enumerate(uploads)]
        params, _ = strategy.aggregate_fit(t, results, [])
        aggregates.append((broadcast, parameters_to_ndarrays(params)))
    return strategy, spy, aggregates


class _Null:
    """A snapshot store that is never written (no round is recorded)."""

    def records(self, **_):
        return []


def test_server_side_clipping_bounds_every_update_and_averages_uniformly():
    exp = experiment(3, clipping="server-fixed", noise_multiplier=0.0, clipping_norm=0.5)
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=50).astype(np.float32)]
    uploads = [rng.normal(size=50).astype(np.float32) * s for s in (10.0, 0.01, 3.0)]
    _, spy, [(broadcast, aggregate)] = drive(exp, uploads, initial)
    updates = [w[0] - broadcast[0] for w, _ in spy.seen]
    assert all(np.linalg.norm(u) <= 0.5 * (1 + 1e-5) for u in updates)
    assert np.linalg.norm(updates[1]) == pytest.approx(np.linalg.norm(uploads[1]), rel=1e-4)
    assert [n for _, n in spy.seen] == [1, 1, 1]  # unweighted, whatever the example counts
    np.testing.assert_allclose(aggregate[0], broadcast[0] + np.mean(updates, axis=0), atol=1e-6)


def test_the_noise_has_the_promised_deviation_and_is_seeded():
    z, clip, m = 1.0, 0.5, 4
    exp = experiment(m, clipping="server-fixed", noise_multiplier=z, clipping_norm=clip)
    initial = [np.zeros(20_000, np.float32)]
    tiny = np.random.default_rng(3).normal(size=20_000).astype(np.float32) * 1e-6
    uploads = [tiny] * m  # an update of norm 1e-4: the aggregate is all but the noise
    _, _, [(_, noisy)] = drive(exp, uploads, initial)
    assert np.std(noisy[0] - tiny) == pytest.approx(z * clip / m, rel=0.03)
    _, _, [(_, again)] = drive(exp, uploads, initial)
    np.testing.assert_array_equal(noisy[0], again[0])


@pytest.mark.parametrize("scale, grows", [(5.0, True), (1e-4, False)])
def test_adaptive_clipping_moves_the_norm_towards_the_quantile(scale, grows):
    """All updates clipped: the norm grows; none clipped: it shrinks (Andrew et al.; Flower
    1.42's own step goes the other way and collapses the norm, strategies/client_dp.py)."""
    exp = experiment(4, clipping="server-adaptive", noise_multiplier=0.0, clipping_norm=0.1,
                     target_clipped_quantile=0.5, clip_norm_lr=0.2)
    rng = np.random.default_rng(1)
    initial = [np.zeros(30, np.float32)]
    uploads = [rng.normal(size=30).astype(np.float32) * scale for _ in range(4)]
    strategy, spy, rounds = drive(exp, uploads, initial, rounds=3)
    factor = np.exp(0.2 * 0.5) if grows else np.exp(-0.2 * 0.5)
    assert strategy.inner.clipping_norm == pytest.approx(0.1 * factor**3)
    if grows:  # the last round's updates were clipped to the norm it started with
        clip = 0.1 * factor**2
        last = rounds[-1][0][0]  # the model broadcast at the last round
        assert all(np.linalg.norm(w[0] - last) == pytest.approx(clip, rel=1e-4)
                   for w, _ in spy.seen)


def test_adaptive_noise_is_calibrated_to_the_norm_the_round_clipped_to():
    m, clip = 4, 0.5
    exp = experiment(m, clipping="server-adaptive", noise_multiplier=1.0, clipping_norm=clip,
                     clipped_count_stddev=1.0)
    initial = [np.zeros(20_000, np.float32)]
    tiny = np.full(20_000, 1e-9, np.float32)  # none clipped: the next norm is smaller
    strategy, _, [(_, noisy)] = drive(exp, [tiny] * m, initial)
    assert strategy.inner.clipping_norm != clip
    z = strategy.inner.noise_multiplier  # Flower's share of the noise for the update
    assert np.std(noisy[0]) == pytest.approx(z * clip / m, rel=0.03)


def test_a_zero_update_is_refused_with_the_reason_not_a_crash():
    """Flower's clipping divides by the update's norm: an upload equal to the model sent would
    crash the aggregator; it is refused (one line) and the round goes on."""
    exp = experiment(2, clipping="server-fixed", noise_multiplier=0.0, clipping_norm=0.5)
    initial = [np.ones(5, np.float32)]
    strategy, spy, [(broadcast, aggregate)] = drive(
        exp, [np.zeros(5, np.float32), np.full(5, 0.1, np.float32)], initial)
    (refusal,) = strategy.round_logs[0].rejected
    assert refusal["partition"] == 0 and "update is zero" in refusal["reason"]
    np.testing.assert_allclose(aggregate[0], broadcast[0] + 0.1, rtol=1e-6)


@pytest.fixture
def in_a_node(monkeypatch):
    """Flower's mods log through the identity of the task their node runs (set by the node)."""
    from flwr.supercore.task_identity import TaskIdentity

    for key in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, key, 1)


def fit_message(weights, config):
    content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(weights), config), True)
    return Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)


def reply(msg, weights, metrics=None):
    res = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters(weights), 7, metrics or {})
    return Message(compat.fitres_to_recorddict(res, True), reply_to=msg)


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_the_clients_mod_clips_the_upload_when_the_config_asks(mode, in_a_node):
    sent = [np.zeros(10, np.float32)]
    trained = [np.full(10, 3.0, np.float32)]  # update norm 9.49
    msg = fit_message(sent, {protocol.CLIENT_CLIPPING: mode, KEY_CLIPPING_NORM: 1.0})
    out = client_clipping_mod(msg, None, lambda m, _: reply(m, trained))
    res = compat.recorddict_to_fitres(out.content, False)
    assert np.linalg.norm(parameters_to_ndarrays(res.parameters)[0]) == pytest.approx(1.0)
    if mode == "adaptive":
        assert res.metrics[KEY_NORM_BIT] in (True, 1)


def test_without_client_clipping_the_mod_passes_the_upload_through(in_a_node):
    sent, trained = [np.zeros(10, np.float32)], [np.full(10, 3.0, np.float32)]
    out = client_clipping_mod(fit_message(sent, {}), None, lambda m, _: reply(m, trained))
    res = compat.recorddict_to_fitres(out.content, False)
    np.testing.assert_array_equal(parameters_to_ndarrays(res.parameters)[0], trained[0])


def test_epsilon_is_the_rdp_accountants_for_the_sampled_gaussian():
    accountant = RDPAccountant()
    accountant.history = [(1.1, 0.1, 50)]
    assert client_level_epsilon(1.1, 0.1, 50, 1e-5) == accountant.get_epsilon(1e-5)
    assert client_level_epsilon(0.0, 0.1, 50, 1e-5) == float("inf")
    assert client_level_epsilon(1.1, 0.1, 10, 1e-5) < client_level_epsilon(1.1, 0.1, 50, 1e-5)
    assert client_level_epsilon(2.0, 0.1, 50, 1e-5) < client_level_epsilon(1.1, 0.1, 50, 1e-5)


def test_adaptive_noise_the_count_cannot_carry_is_refused_at_validation():
    with pytest.raises(ValueError, match="clipped_count_stddev .0.1 = clients_per_round / 20"):
        experiment(2, clipping="client-adaptive", noise_multiplier=1.0)


def test_isolation_is_refused_under_client_dp():
    with pytest.raises(ValueError, match="isolation is refused under federation.client_dp"):
        Experiment(**{**BASE, "federation": {**BASE["federation"], "clients_per_round": None},
                      "attacker": {"kind": "global", "mode": "isolating", "targets": [1]}})


def test_client_side_dp_in_a_real_simulation_clips_every_upload(tmp_path):
    """Client-fixed clipping through Flower's mod in a sampled federation: every upload the
    aggregator recorded is within the clip of the model it was sent, and run.json carries the
    accountant's client-level epsilon after each round."""
    exp = experiment()
    record = run_federated(exp, tmp_path)
    assert record["status"] == "finished", record.get("error")
    view = SnapshotStore(tmp_path / SNAPSHOT_DIR).view("global")
    uploads = view.records(kind="upload")
    assert len(uploads) == 4  # 2 sampled in each of 2 rounds
    for rec in uploads:
        (sent,) = view.records(kind="global", round=rec.round - 1)
        update = np.concatenate([(u - s).ravel() for u, s in
                                 zip(view.read_arrays(rec), view.read_arrays(sent), strict=True)])
        assert np.linalg.norm(update) <= 0.05 * (1 + 1e-4)
    dp = exp.federation.client_dp
    for entry in record["rounds"]:
        want = client_level_epsilon(dp.noise_multiplier, 0.5, entry["round"], dp.delta)
        assert entry["client_epsilon"] == pytest.approx(want)
    assert record["epsilon"] == record["client_epsilon"]
