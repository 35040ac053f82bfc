"""The aggregator's wrappers, one behaviour each, alone and composed around Flower strategies
(issue 27, item 2): the upload gate, the recorder, the malicious aggregator, the model check.
Composed by hand here, outside RecordingStrategy, to show each works around any strategy."""

import numpy as np
import pytest
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    Krum,
)

from fedattack.config import AttackerConfig
from fedattack.snapshots import SnapshotStore
from strategies.gate import ModelCheck, UploadGate
from strategies.malicious import MaliciousWrapper
from strategies.recorder import Recorder
from strategies.wrapper import RunState
from tests.flower_fakes import client_manager, fit_res

NAMES = ["w", "b"]


def weights(rng, scale=1.0):
    return [rng.normal(size=(3, 4)).astype(np.float32) * scale,
            rng.normal(size=(4,)).astype(np.float32) * scale]


def play(strategy, manager, proxies, server_round, parameters, uploads):
    """configure_fit, then aggregate_fit of uploads[i] = (weights, partition claimed) from
    proxies[i]; returns ({cid: model sent}, new parameters)."""
    sent = strategy.configure_fit(server_round, parameters, manager)
    results = [(proxies[i], fit_res(w, 10, pid)) for i, (w, pid) in enumerate(uploads)]
    new, _ = strategy.aggregate_fit(server_round, results, [])
    return {p.cid: parameters_to_ndarrays(ins.parameters) for p, ins in sent}, new


def same(a, b, **tolerance):
    for x, y in zip(a, b, strict=True):
        if tolerance:
            np.testing.assert_allclose(x, y, **tolerance)
        else:
            np.testing.assert_array_equal(x, y)


def test_gate_recorder_and_malice_compose_around_fedadam(tmp_path):
    """Gate(Recorder(Malice(ModelCheck(FedAdam)))): a hostile upload is refused and never
    recorded; the isolated participant gets its own model back (recorded as `sent`); FedAdam
    averages the others, exactly as Flower's FedAdam fed the same uploads."""
    rng = np.random.default_rng(0)
    initial = weights(rng)
    run = RunState([100] * 3)
    adam = FedAdam(initial_parameters=ndarrays_to_parameters(initial), eta=0.05)
    malice = MaliciousWrapper(ModelCheck(adam), run, isolated={0}, ascend=None,
                              attacker=AttackerConfig(mode="isolating", targets=[0],
                                                      isolate_from=2))
    store = SnapshotStore(tmp_path / "snapshots")
    recorder = Recorder(malice, run, store=store, record_round=lambda r: True,
                        weight_names=NAMES)
    gate = UploadGate(recorder, run)
    reference = FedAdam(initial_parameters=ndarrays_to_parameters(initial), eta=0.05)
    manager, proxies = client_manager(3)
    params = gate.initialize_parameters(manager)
    # round 1: partition 2's node claims partition 1: refused; 0 and 1 accepted, and FedAdam
    # averages 1 alone (0 is isolated from round 2, so its upload is kept for it, not averaged)
    up1 = [(weights(rng), 0), (weights(rng), 1), (weights(rng), 1)]
    _, params = play(gate, manager, proxies, 1, params, up1)
    assert run.round_logs[0].accepted == [0, 1]
    assert "bound to partition 2" in run.round_logs[0].rejected[0]["reason"]
    want, _ = reference.aggregate_fit(1, [(proxies[1], fit_res(up1[1][0], 10, 1))], [])
    want = [w.astype(np.float32) for w in parameters_to_ndarrays(want)]  # as ModelCheck casts
    same(parameters_to_ndarrays(params), want)
    assert sorted(r.partition for r in store.records(kind="upload", round=1)) == [0, 1]
    # round 2: partition 0 is sent its own round-1 upload; FedAdam averages 1 and 2 alone
    up2 = [(weights(rng), p) for p in range(3)]
    sent, params = play(gate, manager, proxies, 2, params, up2)
    same(sent[proxies[0].cid], up1[0][0])
    same(sent[proxies[1].cid], want)
    (rec,) = store.records(kind="sent", round=2)
    assert rec.partition == 0
    same(store.read_arrays(rec), up1[0][0])
    want, _ = reference.aggregate_fit(2, [(proxies[i], fit_res(up2[i][0], 10, i))
                                          for i in (1, 2)], [])
    same(parameters_to_ndarrays(params),
         [w.astype(np.float32) for w in parameters_to_ndarrays(want)])
    assert parameters_to_ndarrays(params)[0].dtype == np.float32  # FedAdam's float64, cast


def test_the_recorder_alone_around_krum_records_every_upload_and_krums_choice(tmp_path):
    """No gate: the recorder records what it is handed (a garbage upload too); Krum keeps the
    garbage out of the model, which is one of the honest uploads."""
    rng = np.random.default_rng(1)
    run = RunState([100] * 4)
    krum = Krum(initial_parameters=ndarrays_to_parameters(weights(rng)), num_malicious_clients=1,
                num_clients_to_keep=0, min_fit_clients=4, min_available_clients=4)
    store = SnapshotStore(tmp_path / "snapshots")
    recorder = Recorder(krum, run, store=store, record_round=lambda r: True, weight_names=NAMES)
    manager, proxies = client_manager(4)
    center = weights(rng)
    honest = [[c + 0.01 * rng.normal(size=c.shape).astype(np.float32) for c in center]
              for _ in range(3)]
    garbage = [np.full_like(c, 1e6) for c in center]
    uploads = [(w, p) for p, w in enumerate([*honest, garbage])]
    _, new = play(recorder, manager, proxies, 1, recorder.initialize_parameters(manager), uploads)
    chosen = parameters_to_ndarrays(new)
    assert any(all(np.array_equal(a, b) for a, b in zip(chosen, h, strict=True))
               for h in honest)
    assert sorted(r.partition for r in store.records(kind="upload", round=1)) == [0, 1, 2, 3]
    (glob,) = store.records(kind="global", round=1)
    same(store.read_arrays(glob), chosen)


def test_the_recorder_under_secagg_keeps_no_upload(tmp_path):
    """Under SecAgg+ every result carries the round's aggregate; the recorder keeps only it."""
    rng = np.random.default_rng(2)
    initial = weights(rng)
    run = RunState([100] * 3)
    store = SnapshotStore(tmp_path / "snapshots")
    gate = UploadGate(Recorder(ModelCheck(FedAvg(initial_parameters=ndarrays_to_parameters(
        initial))), run, store=store, record_round=lambda r: True, weight_names=NAMES,
        keeps_uploads=False), run, secure_aggregation=True)
    manager, proxies = client_manager(3)
    aggregate = [w + 0.5 for w in initial]
    _, new = play(gate, manager, proxies, 1, gate.initialize_parameters(manager),
                  [(aggregate, p) for p in range(3)])
    assert store.records(kind="upload") == []
    assert [r.kind for r in store.records(round=1)] == ["global"]
    same(parameters_to_ndarrays(new), aggregate, rtol=1e-6)


def test_the_gate_alone_refuses_and_orders_around_any_strategy():
    class Spy(FedAvg):
        def aggregate_fit(self, server_round, results, failures):
            self.seen = [r.metrics["partition_id"] for _, r in results]
            return super().aggregate_fit(server_round, results, failures)

    rng = np.random.default_rng(3)
    spy = Spy(initial_parameters=ndarrays_to_parameters(weights(rng)))
    run = RunState([100] * 3)
    gate = UploadGate(spy, run)
    manager, proxies = client_manager(3)
    bad = [np.full((3, 4), np.nan, np.float32), np.zeros(4, np.float32)]
    uploads = [(weights(rng), 0), (bad, 1), (weights(rng), 2)]
    order = [2, 1, 0]
    gate.configure_fit(1, gate.initialize_parameters(manager), manager)
    results = [(proxies[i], fit_res(uploads[i][0], 10, uploads[i][1])) for i in order]
    gate.aggregate_fit(1, results, [])
    assert spy.seen == [0, 2] and run.round_logs[0].accepted == [0, 2]
    assert "NaN" in run.round_logs[0].rejected[0]["reason"]


@pytest.mark.parametrize("recorder_outside_dp", [True, False])
def test_recording_before_or_after_server_side_dp_are_two_threat_models(tmp_path,
                                                                        recorder_outside_dp):
    """Recorder(DP(FedAvg)): the curious aggregator records the uploads as they arrive, before
    its own clipping (server-side DP protects the model, not the uploads from the server).
    DP(Recorder(FedAvg)): what is recorded is the clipped uploads and their un-noised average,
    the view of an attacker inside the aggregation after the clipping."""
    rng = np.random.default_rng(4)
    initial = [np.zeros((3, 4), np.float32), np.zeros(4, np.float32)]
    run = RunState([100] * 2)
    store = SnapshotStore(tmp_path / "snapshots")
    fedavg = FedAvg(initial_parameters=ndarrays_to_parameters(initial))

    def dp(inner):
        return DifferentialPrivacyServerSideFixedClipping(inner, noise_multiplier=0.0,
                                                          clipping_norm=1.0,
                                                          num_sampled_clients=2)

    def recorder(inner):
        return Recorder(inner, run, store=store, record_round=lambda r: True,
                        weight_names=NAMES)

    strategy = recorder(dp(fedavg)) if recorder_outside_dp else dp(recorder(fedavg))
    manager, proxies = client_manager(2)
    ups = [weights(rng, 10.0), weights(rng, 10.0)]
    play(strategy, manager, proxies, 1, strategy.initialize_parameters(manager),
         [(ups[0], 0), (ups[1], 1)])
    recorded = {r.partition: store.read_arrays(r) for r in store.records(kind="upload")}
    norms = [np.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in recorded[p]))
             for p in (0, 1)]
    if recorder_outside_dp:
        same(recorded[0], ups[0])
        assert min(norms) > 1.5
    else:
        assert max(norms) == pytest.approx(1.0, rel=1e-5)
