"""Secure aggregation with Flower's SecAgg+ (issue 14 item 3).

Under SecAgg+ the aggregator holds no upload: Flower's SecAggPlusWorkflow hands the strategy every
participant's result with the unmasked sum in place of its parameters. The recorded view must hold
no individual upload, the aggregate must equal plain FedAvg of the participants' uploads to the
protocol's quantisation tolerance, and what needs an individual upload (isolation, the attacks
that read uploads, server-side clipping) is refused at validation.
"""

import numpy as np
import pytest
import torch
from flwr.common import ndarrays_to_parameters

from clients.honest import HonestClient
from fedattack import attack_registry as registry
from fedattack import protocol
from fedattack.config import Experiment
from fedattack.data.splits import load_membership
from fedattack.experiment import SNAPSHOT_DIR
from fedattack.membership import run_attacks
from fedattack.observation import sight_of
from fedattack.simulation import Resources, run_federated
from fedattack.snapshots import SnapshotStore
from fedattack.training import lr_at
from strategies.inner import weighted_average
from strategies.recording import RecordingStrategy
from tests.flower_fakes import client_manager, fit_res

TINY = {
    "name": "secagg",
    "seed": 5,
    "scenario": "federated",
    "data": {"dataset": "purchase100-synth", "train_size": 300,
             "nonmember_size": 5000, "partition": "dirichlet", "alpha": 1.0,
             "min_partition_size": 20,
             "knowledge": {"train_members": 20, "train_nonmembers": 20, "test_members": 20,
                           "test_nonmembers": 20}},
    "model": {"arch": "purchase-fc"},
    "federation": {"num_participants": 6, "clients_per_round": 3, "rounds": 2,
                   "secure_aggregation": True},
    "attacker": {"kind": "global", "mode": "passive", "targets": [0, 1]},
    "attack": {"attacks": ["threshold-loss"]},
}


def experiment(**changes) -> Experiment:
    spec = {**TINY, **changes}
    return Experiment(**spec)


def federation(**changes) -> dict:
    return {**TINY["federation"], **changes}


# -- validation ------------------------------------------------------------------------------

def test_true_takes_flowers_defaults_and_false_turns_it_off():
    on = experiment().federation.secure_aggregation
    assert (on.num_shares, on.reconstruction_threshold, on.clipping_range) == (1.0, 0.5, 8.0)
    assert on.quantization_range == 2**22 and on.modulus_range == 2**32
    assert experiment(federation=federation(secure_aggregation=False)).federation \
        .secure_aggregation is None
    assert experiment(federation=federation(secure_aggregation={"num_shares": 3})).federation \
        .secure_aggregation.num_shares == 3


@pytest.mark.parametrize("changes, says", [
    ({"attacker": {"kind": "global", "mode": "isolating", "targets": [1]},
      "federation": federation(clients_per_round=None)}, r"SecAgg\+ hides"),
    ({"federation": federation(clients_per_round=1)}, "at least 2 participants per round"),
    ({"federation": federation(client_dp={"clipping": "server-fixed"})},
     r"sees no upload under SecAgg\+"),
    ({"attack": {"attacks": ["fedmia"]}}, "hides from the aggregator"),
    ({"attack": {"attacks": ["gradcos"]}}, "hides from the aggregator"),
])
def test_what_needs_an_individual_upload_is_refused(changes, says):
    with pytest.raises(ValueError, match=says):
        experiment(**changes)


def test_client_side_clipping_and_single_model_attacks_are_allowed():
    exp = experiment(federation=federation(client_dp={"clipping": "client-fixed"}),
                     attack={"attacks": ["threshold-loss", "rmia-offline"]})
    assert exp.federation.client_dp.on_clients
    assert registry.get("threshold-loss").refusal(exp) is None


def test_the_global_attacker_reads_the_aggregates():
    exp = experiment()
    sight = sight_of(exp, "participant-0")
    assert (sight.attacker, sight.view, sight.kind, sight.partition) == (
        "global", "global", "global", None)
    plain = experiment(federation=federation(secure_aggregation=None))
    assert sight_of(plain, "participant-0").kind == "upload"


# -- the recorder without Ray ----------------------------------------------------------------

def recorder(tmp_path, initial):
    return RecordingStrategy(
        store=SnapshotStore(tmp_path / "snapshots"), record_round=lambda r: True,
        weight_names=["w", "b"], fit_config=lambda r: {}, partition_sizes=[50, 50, 50],
        initial_parameters=ndarrays_to_parameters(initial), min_fit_clients=3,
        min_available_clients=3, secure_aggregation=True)


def test_recorder_records_the_aggregate_and_no_upload(tmp_path):
    rng = np.random.default_rng(0)
    initial = [rng.normal(size=(3, 2)).astype(np.float32), np.zeros(2, np.float32)]
    strategy = recorder(tmp_path, initial)
    manager, proxies = client_manager(3)
    strategy.configure_fit(1, strategy.initialize_parameters(manager), manager)
    # what SecAggPlusWorkflow hands over: the float64 sum in every participant's result
    aggregate = [a.astype(np.float64) + 0.5 for a in initial]
    results = [(proxies[i], fit_res(aggregate, 10 * (i + 1), i)) for i in range(3)]
    params, metrics = strategy.aggregate_fit(1, results, [])
    assert metrics == {"accepted": 3}
    store = strategy.store
    assert store.records(view="global", kind="upload") == []
    (rec,) = store.records(view="global", kind="global", round=1)
    for got, want in zip(store.read_arrays(rec), aggregate, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_bad_aggregate_fails_the_round_with_the_reason(tmp_path):
    initial = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]
    strategy = recorder(tmp_path, initial)
    manager, proxies = client_manager(3)
    strategy.configure_fit(1, strategy.initialize_parameters(manager), manager)
    bad = [np.full((3, 2), np.nan), np.zeros(2)]
    results = [(proxies[i], fit_res(bad, 10, i)) for i in range(3)]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert params is None and "the secure aggregate: tensor 0 holds NaN" in str(strategy.failure)
    assert strategy.store.records(view="global", kind="global", round=1) == []


# -- a real Flower simulation: sampled, non-IID, SecAgg+ -------------------------------------

@pytest.fixture(scope="module")
def secagg_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("secagg")
    exp = experiment()
    record = run_federated(exp, run_dir)
    return exp, run_dir, record


def test_sampled_non_iid_secagg_federation_records_no_upload(secagg_run):
    exp, run_dir, record = secagg_run
    assert record["status"] == "finished", record.get("error")
    assert all(len(r["accepted"]) == 3 and not r["rejected"] for r in record["rounds"])
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    kinds = {(r.kind, r.partition) for r in store.view("global").records()}
    assert kinds == {("global", None)}  # broadcasts and aggregates, not one upload
    assert store.view("global").rounds("global") == [0, 1, 2]


def test_secagg_aggregate_is_fedavg_of_the_uploads_to_quantisation_tolerance(secagg_run):
    """Each participant's training is replayed outside Flower on the model it was sent; plain
    FedAvg of the replayed uploads must equal the secure aggregate to within what SecAgg+'s
    quantisation allows (each upload, scaled by its weight n / max_weight, is rounded to a step
    of 2 * clipping_range / quantization_range)."""
    exp, run_dir, record = secagg_run
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    max_weight = max(len(p) for p in load_membership(run_dir).partitions)  # the server's
    cfg = exp.federation.secure_aggregation
    step = 2 * cfg.clipping_range / cfg.quantization_range
    threads = Resources.for_experiment(exp).client_cpus
    saved = torch.get_num_threads()
    try:
        for entry in record["rounds"]:
            t = entry["round"]
            (sent,) = store.records(view="global", kind="global", round=t - 1)
            config = {protocol.SERVER_ROUND: t, protocol.LR: lr_at(exp.training, t - 1),
                      protocol.EXPERIMENT: exp.model_dump_json()}
            uploads = []
            for pid in entry["accepted"]:
                weights, n, _ = HonestClient(pid, threads=threads).fit(store.read_arrays(sent),
                                                                       config)
                uploads.append((weights, n))
            tolerance = 2 * len(uploads) * step / sum(n / max_weight for _, n in uploads)
            (glob,) = store.records(view="global", kind="global", round=t)
            for got, want in zip(store.read_arrays(glob), weighted_average(uploads),
                                 strict=True):
                assert np.abs(got.astype(np.float64) - want).max() <= tolerance, t
                assert np.abs(got - want).max() > 0  # quantised: not the plain average
    finally:
        torch.set_num_threads(saved)


def test_the_global_attacker_attacks_the_aggregates(secagg_run):
    exp, run_dir, _ = secagg_run
    report = run_attacks(exp, run_dir, log=lambda _: None)
    rows = [r for r in report.results if r["victim"].startswith("participant-")]
    assert {r["victim"] for r in rows} == {"participant-0", "participant-1"}
    for row in rows:
        assert row["attacker"] == "global" and row["snapshots"] == "round-1,round-2"
        assert row["observed"] == "the aggregates only (secure aggregation hides every upload)"
        assert 0 <= row["auc"] <= 1


# -- hostile participants under SecAgg+ (issue 25, items 3 and 4) ----------------------------

def test_a_wrong_masked_vector_is_refused_and_a_halted_round_fails_the_run(
        tmp_path, monkeypatch):
    """Round 1: participant 1 uploads a transposed matrix, so its masked vector has the wrong
    shape: refused, named, and the round aggregates the other two (SecAgg+ treats it as having
    dropped out). Round 2: two of three participants fail, too few for the threshold: SecAgg+
    halts the round, and the run fails with one line instead of ending "finished" untrained."""
    import fedattack.simulation as simulation
    from fedattack.experiment import RUN_FILE
    from fedattack.io import read_json
    from fedattack.protocol import FederationFailed

    monkeypatch.setattr(simulation, "CLIENT_APP_FACTORY",
                        "tests.hostile_participants:make_secagg_breaker_client_app")
    exp = experiment(name="secagg-breakers", attacker=None, attack=None,
                     data={k: v for k, v in TINY["data"].items()
                           if k not in ("partition", "alpha", "min_partition_size")},
                     federation=federation(num_participants=3, clients_per_round=None, rounds=3))
    with pytest.raises(FederationFailed) as failed:
        run_federated(exp, tmp_path)
    message = str(failed.value)
    assert "\n" not in message and message.startswith(
        "round 2: secure aggregation (SecAgg+) halted in its collect-masked-vectors stage")
    assert "1 of 3 sampled participant(s) still active" in message
    record = read_json(tmp_path / RUN_FILE)
    assert record["status"] == "failed" and record["error"] == message
    (first,) = record["rounds"]
    assert first["accepted"] == [0, 2]
    (refusal,) = first["rejected"]
    assert refusal["node"] == record["binding"]["1"] and refusal["bound"] == 1
    assert "masked tensor 1 has shape (600, 1024), expected (1024, 600)" in refusal["reason"]
    assert [h["round"] for h in record["history"]] == [0, 1]  # nothing after the halted round
    store = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    (glob,) = store.records(view="global", kind="global", round=1)
    assert all(np.isfinite(a).all() for a in store.read_arrays(glob))


def test_a_masked_vector_is_checked_before_it_is_summed():
    from flwr.common import ndarray_to_bytes

    from strategies.secure_aggregation import masked_vector_fault

    shapes, mod = [(1,), (2, 3)], 1 << 10
    good = [ndarray_to_bytes(np.array([4])), ndarray_to_bytes(np.ones((2, 3), np.int64))]
    assert masked_vector_fault(good, shapes, mod) is None
    cases = [
        (good[:1], "masked vector of 1 tensors, expected 2"),
        ([good[0], ndarray_to_bytes(np.ones((3, 2), np.int64))],
         "masked tensor 1 has shape (3, 2), expected (2, 3)"),
        ([good[0], ndarray_to_bytes(np.ones((2, 3)))], "dtype float64, expected integers"),
        ([good[0], ndarray_to_bytes(np.full((2, 3), mod))], "outside [0, 1024)"),
        ([good[0], b"garbage"], "masked tensor 1 unreadable"),
        ("not a list", "masked vector of str tensors"),
    ]
    for vector, says in cases:
        assert says in masked_vector_fault(vector, shapes, mod)
