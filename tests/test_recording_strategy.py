"""The recording FedAvg, driven by hand-made proxies and results (no Ray, no simulation)."""

import errno
import time

import numpy as np
import pytest
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

from fedattack.snapshots import SnapshotStore
from strategies.inner import OrderedFedAvg, weighted_average
from strategies.recording import RecordingStrategy, check_upload
from tests.flower_fakes import client_manager, fit_res

NAMES = ["w", "b", "count"]


def model_weights(rng, scale=1.0):
    return [
        rng.normal(size=(3, 4)).astype(np.float32) * scale,
        rng.normal(size=(4,)).astype(np.float32),
        np.array(rng.integers(0, 100), np.int64),
    ]


@pytest.fixture
def setup(tmp_path):
    rng = np.random.default_rng(0)
    store = SnapshotStore(tmp_path / "snapshots")
    initial = model_weights(rng)
    strategy = RecordingStrategy(
        store=store,
        record_round=lambda r: r in (1, 3),
        weight_names=NAMES,
        fit_config=lambda r: {"server-round": r, "lr": 0.1},
        partition_sizes=[100, 100, 100],
        initial_parameters=ndarrays_to_parameters(initial),
        min_fit_clients=3,
        min_available_clients=3,
    )
    return strategy, store, initial, rng


def test_weighted_average_formula_and_integer_rounding():
    a = [np.array([1.0, 2.0], np.float32), np.array(3, np.int64)]
    b = [np.array([3.0, 6.0], np.float32), np.array(4, np.int64)]
    avg = weighted_average([(a, 1), (b, 3)])
    np.testing.assert_array_equal(avg[0], np.array([2.5, 5.0], np.float32))
    assert avg[0].dtype == np.float32
    assert avg[1].dtype == np.int64 and int(avg[1]) == 4  # 3*0.25 + 4*0.75 = 3.75 -> 4


def test_configure_fit_sends_config_to_all_and_records_broadcast(setup):
    strategy, store, initial, _ = setup
    manager, proxies = client_manager(3)
    instructions = strategy.configure_fit(1, strategy.initialize_parameters(manager), manager)
    assert sorted(p.cid for p, _ in instructions) == sorted(p.cid for p in proxies)
    for _, ins in instructions:
        assert ins.config == {"server-round": 1, "lr": 0.1}
    (rec,) = store.records(view="global", kind="global", round=0)
    for got, want in zip(store.read_arrays(rec), initial, strict=True):
        np.testing.assert_array_equal(got, want)


def aggregate_round(strategy, manager, proxies, uploads, server_round=1):
    params = strategy.initialize_parameters(manager) if server_round == 1 else None
    for proxy, (_, _, pid) in zip(proxies, uploads, strict=False):
        if proxy.cid not in strategy.partition_of:  # its node_config, before it is bound
            proxy.partition = pid
    strategy.configure_fit(server_round, params or strategy.last, manager)
    results = [(proxies[i], fit_res(w, n, pid)) for i, (w, n, pid) in enumerate(uploads)]
    agg, metrics = strategy.aggregate_fit(server_round, results, [])
    strategy.last = agg
    return agg, metrics


def test_uploads_recorded_bit_exact_and_aggregate_is_fedavg(setup):
    strategy, store, _, rng = setup
    manager, proxies = client_manager(3)
    uploads = [(model_weights(rng), n, pid) for pid, n in [(2, 10), (0, 30), (1, 20)]]
    agg, metrics = aggregate_round(strategy, manager, proxies, uploads)
    assert metrics == {"accepted": 3}
    for weights, _, pid in uploads:
        (rec,) = store.records(view="global", kind="upload", round=1, partition=pid)
        for got, want in zip(store.read_arrays(rec), weights, strict=True):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    expected = weighted_average([(w, n) for w, n, _ in sorted(uploads, key=lambda u: u[2])])
    (rec,) = store.records(view="global", kind="global", round=1)
    for got, want, sent in zip(
        store.read_arrays(rec), expected, parameters_to_ndarrays(agg), strict=True
    ):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(sent, want)
    np.testing.assert_allclose(expected[0], sum(w[0] * n for w, n, _ in uploads) / 60, rtol=1e-6)


def test_aggregate_independent_of_arrival_order(tmp_path):
    rng = np.random.default_rng(1)
    uploads = [(model_weights(rng, 1e3), 10 + pid, pid) for pid in range(3)]
    outcomes = []
    for order in ([0, 1, 2], [2, 0, 1]):
        store = SnapshotStore(tmp_path / str(order))
        strategy = RecordingStrategy(
            store=store,
            record_round=lambda r: True,
            weight_names=NAMES,
            fit_config=lambda r: {},
            partition_sizes=[100] * 3,
            initial_parameters=ndarrays_to_parameters(uploads[0][0]),
        )
        manager, proxies = client_manager(3)
        agg, _ = aggregate_round(strategy, manager, proxies, [uploads[i] for i in order])
        outcomes.append(parameters_to_ndarrays(agg))
    for a, b in zip(*outcomes, strict=True):
        assert a.tobytes() == b.tobytes()


class PlainOrderedFedAvg(OrderedFedAvg):
    """OrderedFedAvg under another type: the recorder hands it Flower's Parameters."""


def test_fedavg_fast_path_is_bit_identical_to_the_inner_strategy(tmp_path):
    rng = np.random.default_rng(2)
    uploads = [(model_weights(rng, 1e3), 7 + 3 * pid, pid) for pid in range(3)]
    outcomes = []
    for inner_type in (OrderedFedAvg, PlainOrderedFedAvg):
        strategy = RecordingStrategy(
            store=SnapshotStore(tmp_path / inner_type.__name__),
            record_round=lambda r: True, weight_names=NAMES, partition_sizes=[100] * 3,
            inner=inner_type(initial_parameters=ndarrays_to_parameters(uploads[0][0]),
                             fraction_evaluate=0.0))
        manager, proxies = client_manager(3)
        agg, _ = aggregate_round(strategy, manager, proxies, uploads)
        outcomes.append(parameters_to_ndarrays(agg))
    for a, b in zip(*outcomes, strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_a_round_is_recorded_with_one_manifest_write(setup, monkeypatch):
    from fedattack import snapshots

    strategy, store, _, rng = setup
    manager, proxies = client_manager(3)
    strategy.configure_fit(1, strategy.initialize_parameters(manager), manager)
    manifests = []
    real = snapshots.write_atomic
    monkeypatch.setattr(snapshots, "write_atomic", lambda path, data, **kw: (
        manifests.append(path) if path.name == snapshots.MANIFEST else None,
        real(path, data, **kw)))
    results = [(proxies[p], fit_res(model_weights(rng), 5, p)) for p in range(3)]
    strategy.aggregate_fit(1, results, [])
    assert len(manifests) == 1
    assert len(store.records(view="global", round=1)) == 4  # three uploads, the aggregate


def test_unrecorded_round_writes_nothing(setup):
    strategy, store, _, rng = setup
    manager, proxies = client_manager(3)
    aggregate_round(strategy, manager, proxies, [(model_weights(rng), 5, p) for p in range(3)])
    aggregate_round(strategy, manager, proxies, [(model_weights(rng), 5, p) for p in range(3)], 2)
    assert store.records(view="global", round=2) == []
    assert [r.round for r in store.records(view="global", kind="global")] == [0, 1]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("shape", "shape"),
        ("nan", "NaN or Inf"),
        ("inf", "NaN or Inf"),
        ("count", "tensors"),
        ("no_pid", "partition_id"),
    ],
)
def test_bad_upload_refused_round_goes_on(setup, bad, reason, caplog):
    strategy, store, _, rng = setup
    manager, proxies = client_manager(3)
    good = [(model_weights(rng), 10, 0), (model_weights(rng), 10, 1)]
    broken = model_weights(rng)
    pid = 2
    if bad == "shape":
        broken[0] = broken[0][:2]
    elif bad == "nan":
        broken[1][0] = np.nan
    elif bad == "inf":
        broken[0][1, 1] = np.inf
    elif bad == "count":
        broken = broken[:2]
    else:
        pid = None
    agg, metrics = aggregate_round(strategy, manager, proxies, good + [(broken, 10, pid)])
    assert metrics == {"accepted": 2}
    (round_log,) = strategy.round_logs
    assert round_log.accepted == [0, 1]
    (refusal,) = round_log.rejected
    assert reason in refusal["reason"] and refusal["node"] == proxies[2].cid
    assert "refused upload" in caplog.text
    expected = weighted_average([(w, n) for w, n, _ in good])
    for got, want in zip(parameters_to_ndarrays(agg), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert sorted(r.partition for r in store.records(view="global", kind="upload")) == [0, 1]
    assert store.records(view="global", kind="global", round=0)  # earlier records kept


def test_all_uploads_refused_keeps_model(setup):
    strategy, store, _, rng = setup
    manager, proxies = client_manager(3)
    bad = model_weights(rng)
    bad[0][0, 0] = np.nan
    agg, metrics = aggregate_round(strategy, manager, proxies, [(bad, 1, p) for p in range(3)])
    assert agg is None and metrics == {}
    assert store.records(view="global", kind="global", round=1) == []


def test_check_upload_accepts_matching():
    w = [np.zeros((2, 2), np.float32)]
    check_upload([np.ones((2, 2), np.float32)], w)


def background_strategy(tmp_path, name, last_round, store=None):
    rng = np.random.default_rng(4)
    initial = model_weights(rng)
    strategy = RecordingStrategy(
        store=store or SnapshotStore(tmp_path / name), record_round=lambda r: True,
        weight_names=NAMES, partition_sizes=[100] * 3, last_round=last_round,
        fit_config=lambda r: {}, initial_parameters=ndarrays_to_parameters(initial))
    return strategy, rng


def run_rounds(strategy, rng, rounds):
    manager, proxies = client_manager(3)
    for server_round in range(1, rounds + 1):
        aggregate_round(strategy, manager, proxies,
                        [(model_weights(rng), 5 + p, p) for p in range(3)], server_round)


def test_rounds_written_while_the_next_trains_land_as_if_written_at_once(tmp_path):
    outcomes = []
    for name, last in (("sync", None), ("background", 3)):
        strategy, rng = background_strategy(tmp_path, name, last)
        run_rounds(strategy, rng, 3)
        assert strategy.failure is None
        store = SnapshotStore(tmp_path / name)  # from disk
        outcomes.append([(r.key[1:], [a.tobytes() for a in store.read_arrays(r)])
                         for r in store.records(view="global")])
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[1]) == 1 + 3 * 4  # round 0, then three uploads and the aggregate


class SlowStore(SnapshotStore):
    """Takes 0.3 s to write a batch, and can be told to find the disk full."""

    full = False

    def write_many(self, view, snapshots):
        time.sleep(0.3)
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write_many(view, snapshots)


def test_a_round_is_written_in_the_background_except_the_last(tmp_path):
    store = SlowStore(tmp_path / "slow")
    strategy, rng = background_strategy(tmp_path, "slow", 2, store)
    manager, proxies = client_manager(3)
    strategy.configure_fit(1, strategy.initialize_parameters(manager), manager)
    uploads = [(proxies[p], fit_res(model_weights(rng), 5, p)) for p in range(3)]
    started = time.perf_counter()
    agg, _ = strategy.aggregate_fit(1, uploads, [])
    assert time.perf_counter() - started < 0.25  # round 1 is being written
    strategy.configure_fit(2, agg, manager)  # round 1's aggregate is on its way: not rewritten
    uploads = [(proxies[p], fit_res(model_weights(rng), 5, p)) for p in range(3)]
    started = time.perf_counter()
    strategy.aggregate_fit(2, uploads, [])
    assert time.perf_counter() - started >= 0.5  # round 1 waited for, round 2 written at once
    assert len(SnapshotStore(tmp_path / "slow").records(view="global")) == 1 + 2 * 4


def test_a_full_disk_in_the_background_fails_the_run(tmp_path):
    store = SlowStore(tmp_path / "full")
    failures = []
    strategy, rng = background_strategy(tmp_path, "full", 3, store)
    strategy.on_failure = failures.append
    manager, proxies = client_manager(3)
    agg, _ = aggregate_round(strategy, manager, proxies,
                             [(model_weights(rng), 5, p) for p in range(3)], 1)
    store.full = True
    strategy.configure_fit(2, agg, manager)
    results = [(proxies[p], fit_res(model_weights(rng), 5, p)) for p in range(3)]
    assert strategy.aggregate_fit(2, results, []) == (None, {})
    assert len(failures) == 1 and failures[0].errno == errno.ENOSPC
    assert strategy.configure_fit(3, agg, manager) == []  # the remaining rounds do nothing
