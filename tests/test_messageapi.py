"""fedattack.messageapi around Message-API strategies, with a fake Grid (no Ray, no SuperLink):
the example app's own ClientApp (examples/flower-app, with its mods) answers each message in this
process, so the gate, the recorder, the malicious aggregator and the mods are driven as in
`flwr run`, round by round."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    Krum,
)

from fedattack.config import ConfigError
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.messageapi import AUDIT_CONFIG, AUDIT_RUN_DIR, audited
from fedattack.messageapi.server import (
    PARTITION_METRIC,
    MaliciousAggregator,
    Recorder,
    UploadGate,
)
from fedattack.protocol import FederationFailed
from fedattack.snapshots import SnapshotStore

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "flower-app"
pytestmark = pytest.mark.usefixtures("one_thread")

NODES = {101: 0, 102: 1, 103: 2, 104: 3}  # node id -> the partition its node_config names


@pytest.fixture
def app(monkeypatch):
    """The example app's modules, importable as `flwr run` makes them."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.syspath_prepend(str(APP))
    for key in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, key, 1)
    for name in [m for m in sys.modules if m.startswith("flower_app")]:
        monkeypatch.delitem(sys.modules, name)
    import flower_app.client_app
    import flower_app.task

    return flower_app


class FakeGrid:
    """Sends each message to the example's ClientApp in this process; `hostile` may rewrite a
    node's reply (node id -> (round, reply) -> reply). Keeps what each node received."""

    def __init__(self, client_app, run_config: dict, hostile: dict | None = None) -> None:
        self.client_app, self.run_config = client_app, run_config
        self.hostile = hostile or {}
        self.received: dict[tuple[int, int], list[np.ndarray]] = {}  # (round, node) -> model
        self.replies: dict[tuple[int, int], list[np.ndarray]] = {}  # as sent, before the gate

    def get_node_ids(self):
        return list(NODES)

    def send_and_receive(self, messages, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            server_round = int(msg.content["config"]["server-round"])
            context = Context(run_id=1, node_id=node, node_config={
                "partition-id": NODES[node], "num-partitions": len(NODES)},
                state=RecordDict(), run_config=self.run_config)
            if msg.metadata.message_type == "train":
                self.received[server_round, node] = msg.content["arrays"].to_numpy_ndarrays()
            reply = self.client_app(msg, context)
            if msg.metadata.message_type == "train":
                if node in self.hostile:
                    reply = self.hostile[node](server_round, reply)
                arrays = reply.content.array_records
                if arrays:
                    self.replies[server_round, node] = next(
                        iter(arrays.values())).to_numpy_ndarrays()
            replies.append(reply)
        return replies


def audit_yaml(tmp_path: Path, rounds: int = 2, **changes) -> Path:
    spec = yaml.safe_load((APP / "audit.yaml").read_text())
    spec["federation"]["rounds"] = rounds
    spec.pop("attack")
    spec["attacker"] = None
    spec.update(changes)
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_config(tmp_path: Path, config: Path) -> dict:
    return {AUDIT_CONFIG: str(config), AUDIT_RUN_DIR: str(tmp_path / "run"),
            "local-epochs": 1, "lr": 0.05}


def members(p: int, n: int):
    from flower_app.task import partition_indices

    return partition_indices(p, n)[0]


def initial(app):
    import torch

    torch.manual_seed(0)
    return ArrayRecord(app.task.Net().state_dict())


def run(app, tmp_path, strategy, rounds=2, hostile=None, wrap=None, **changes):
    """Run `strategy` audited for `rounds` rounds; (grid, run_dir, store, run.json)."""
    config = run_config(tmp_path, audit_yaml(tmp_path, rounds, **changes))
    grid = FakeGrid(app.client_app.app, config, hostile)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config=config)
    wrapped = (wrap or audited)(strategy, context, members)
    wrapped.start(grid=grid, initial_arrays=initial(app), num_rounds=rounds,
                  train_config=ConfigRecord({"lr": 0.05}))
    run_dir = tmp_path / "run"
    return grid, run_dir, SnapshotStore(run_dir / SNAPSHOT_DIR), read_json(run_dir / RUN_FILE)


def model(store, view, kind, rnd, partition=None):
    (rec,) = store.records(view=view, kind=kind, round=rnd, partition=partition)
    return list(store.read_arrays(rec))


def fedavg(uploads: list[list[np.ndarray]], weights: list[int]) -> list[np.ndarray]:
    total = sum(weights)
    return [sum(u[i] * (w / total) for u, w in zip(uploads, weights, strict=True))
            for i in range(len(uploads[0]))]


def test_recorder_around_fedavg_records_every_upload_and_each_broadcast(app, tmp_path):
    grid, run_dir, store, record = run(app, tmp_path, FedAvg(fraction_evaluate=0.0))
    assert record["status"] == "finished"
    assert [h["round"] for h in record["history"]] == [0, 1, 2]
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1, 2, 3]] * 2
    assert all(np.isfinite(h["test_accuracy"]) for h in record["history"])
    for rnd in (1, 2):
        uploads = [model(store, "global", "upload", rnd, p) for p in range(4)]
        for node, p in NODES.items():  # each upload is what that node's partition sent
            for got, sent in zip(uploads[p], grid.replies[rnd, node], strict=True):
                np.testing.assert_array_equal(got, sent)
        sizes = [len(members(p, 4)) for p in range(4)]
        for got, want in zip(model(store, "global", "global", rnd), fedavg(uploads, sizes),
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # what every node received in a round is the previous round's recorded global model
        for node in NODES:
            for got, sent in zip(model(store, "global", "global", rnd - 1),
                                 grid.received[rnd, node], strict=True):
                np.testing.assert_array_equal(got, sent)
    assert (run_dir / "splits" / "membership.npz").exists()


def test_recorder_around_krum_records_the_upload_krum_chose(app, tmp_path):
    _, _, store, record = run(app, tmp_path, Krum(fraction_evaluate=0.0, num_malicious_nodes=1))
    assert record["status"] == "finished"
    for rnd in (1, 2):
        uploads = [model(store, "global", "upload", rnd, p) for p in range(4)]
        chosen = model(store, "global", "global", rnd)
        assert sum(all(np.array_equal(a, b) for a, b in zip(u, chosen, strict=True))
                   for u in uploads) == 1


def test_recorder_around_fedadam_keeps_the_model_dtypes(app, tmp_path):
    _, _, store, record = run(app, tmp_path, FedAdam(fraction_evaluate=0.0))
    assert record["status"] == "finished"
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1, 2, 3]] * 2  # round 2 accepted
    assert all(a.dtype == np.float32 for a in model(store, "global", "global", 2))


def nan_upload(rnd, reply):
    (key, arrays), = reply.content.array_records.items()
    names = list(arrays.keys())
    values = arrays.to_numpy_ndarrays()
    values[0] = np.full_like(values[0], np.nan)
    reply.content.array_records[key] = ArrayRecord(
        {n: Array(v) for n, v in zip(names, values, strict=True)})
    return reply


def wrong_shape(rnd, reply):
    (key, arrays), = reply.content.array_records.items()
    names = list(arrays.keys())
    values = arrays.to_numpy_ndarrays()
    values[-1] = np.zeros(values[-1].size + 1, values[-1].dtype)
    reply.content.array_records[key] = ArrayRecord(
        {n: Array(v) for n, v in zip(names, values, strict=True)})
    return reply


def other_partition(rnd, reply):
    if rnd == 2:  # bound to partition 3 in round 1, it claims partition 0's place
        (metrics,) = reply.content.metric_records.values()
        metrics[PARTITION_METRIC] = 0
    return reply


def no_partition(rnd, reply):
    (metrics,) = reply.content.metric_records.values()
    del metrics[PARTITION_METRIC]
    return reply


def too_many_examples(rnd, reply):
    (metrics,) = reply.content.metric_records.values()
    metrics["num-examples"] = 10**6
    return reply


@pytest.mark.parametrize(("hostile", "reason", "rounds"), [
    (nan_upload, "holds NaN or Inf", [1, 2]),
    (wrong_shape, "expected float32[4]", [1, 2]),
    (other_partition, "claims partition 0, but it holds partition 3", [2]),
    (no_partition, "no 'partition-id'", [1, 2]),
    (too_many_examples, "num-examples 1000000 outside 1..480", [1, 2]),
])
def test_gate_refuses_a_hostile_reply_which_is_neither_recorded_nor_aggregated(
        app, tmp_path, hostile, reason, rounds):
    _, _, store, record = run(app, tmp_path, FedAvg(fraction_evaluate=0.0),
                              hostile={104: hostile})
    assert record["status"] == "finished"
    refused = {r["round"]: r for r in record["refusals"]}
    assert sorted(refused) == rounds
    assert all(reason in r["reason"] and r["node"] == 104 for r in refused.values()), refused
    for rnd in rounds:
        accepted = [p for p in range(4) if p != 3]
        assert record["rounds"][rnd - 1]["accepted"] == accepted
        assert not store.records(view="global", kind="upload", round=rnd, partition=3)
        uploads = [model(store, "global", "upload", rnd, p) for p in accepted]
        sizes = [len(members(p, 4)) for p in accepted]
        for got, want in zip(model(store, "global", "global", rnd), fedavg(uploads, sizes),
                             strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_round_with_no_acceptable_upload_fails_the_run_in_one_line(app, tmp_path):
    hostile = dict.fromkeys(NODES, nan_upload)
    with pytest.raises(FederationFailed, match="round 1: no upload was accepted"):
        run(app, tmp_path, FedAvg(fraction_evaluate=0.0), hostile=hostile)
    assert read_json(tmp_path / "run" / RUN_FILE)["status"] == "failed"


def test_the_app_running_other_rounds_than_the_audit_is_refused(app, tmp_path):
    config = run_config(tmp_path, audit_yaml(tmp_path, rounds=3))
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config=config)
    strategy = audited(FedAvg(), context, members)
    with pytest.raises(FederationFailed, match="runs 2 rounds but the audit YAML's "
                       "federation.rounds is 3"):
        strategy.start(grid=FakeGrid(app.client_app.app, config), initial_arrays=initial(app),
                       num_rounds=2)


def test_malicious_aggregator_broadcasts_the_ascended_model(app, tmp_path):
    attacker = {"kind": "global", "targets": [0], "mode": "gradient-ascent"}
    grid, _, store, record = run(app, tmp_path, FedAvg(fraction_evaluate=0.0), attacker=attacker)
    assert record["status"] == "finished"
    uploads = [model(store, "global", "upload", 1, p) for p in range(4)]
    average = fedavg(uploads, [len(members(p, 4)) for p in range(4)])
    recorded = model(store, "global", "global", 1)
    assert any(not np.allclose(a, b, atol=1e-6) for a, b in zip(recorded, average, strict=True))
    for node in NODES:  # the ascended model is what round 2 broadcast
        for got, sent in zip(recorded, grid.received[2, node], strict=True):
            np.testing.assert_array_equal(got, sent)
    step = record["rounds"][0]["ascent"]["global"]
    assert step["step_norm"] > 0 and np.isfinite(step["ascended_loss"])


def test_malicious_aggregator_is_refused_unless_the_audit_names_an_aggregator(app, tmp_path):
    def wrap(strategy, context, members_):
        from fedattack.messageapi.audit import AuditRun, audit_paths

        run_ = AuditRun.from_files(*audit_paths(context.run_config), members_)
        return MaliciousAggregator(strategy, run_)

    with pytest.raises(FederationFailed, match="attacker is not the aggregator"):
        run(app, tmp_path, FedAvg(), wrap=wrap)


def test_malicious_participant_mod_records_the_models_it_receives(app, tmp_path):
    attacker = {"kind": "local", "participant": 1}
    grid, _, store, record = run(app, tmp_path, FedAvg(fraction_evaluate=0.0), attacker=attacker)
    assert record["status"] == "finished"
    assert {r.view for r in store.records()} == {"global", "local-1"}
    for rnd in (1, 2):
        for got, sent in zip(model(store, "local-1", "sent", rnd, 1), grid.received[rnd, 102],
                             strict=True):
            np.testing.assert_array_equal(got, sent)


def test_recorder_outside_server_side_dp_records_uploads_before_the_noise(app, tmp_path):
    """The composition order is the threat model: around Flower's server-side DP wrapper the
    recorder holds the raw uploads (the aggregator adds the noise) and the noised global
    models (what the DP guarantee is about)."""
    def wrap(strategy, context, members_):
        from fedattack.messageapi.audit import AuditRun, audit_paths

        run_ = AuditRun.from_files(*audit_paths(context.run_config), members_)
        dp = DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier=1.0,
                                                        clipping_norm=0.5, num_sampled_clients=4)
        return UploadGate(Recorder(dp, run_), 4, run_.partition_sizes, run_)

    grid, _, store, record = run(app, tmp_path, FedAvg(fraction_evaluate=0.0), wrap=wrap)
    assert record["status"] == "finished"
    for node, p in NODES.items():  # unclipped: exactly what the participant sent
        for got, sent in zip(model(store, "global", "upload", 1, p), grid.replies[1, node],
                             strict=True):
            np.testing.assert_array_equal(got, sent)
    uploads = [model(store, "global", "upload", 1, p) for p in range(4)]
    average = fedavg(uploads, [len(members(p, 4)) for p in range(4)])
    noised = model(store, "global", "global", 1)
    assert any(not np.allclose(a, b, atol=1e-3) for a, b in zip(noised, average, strict=True))


def test_partitions_that_overlap_are_refused_in_one_line(app, tmp_path):
    config = run_config(tmp_path, audit_yaml(tmp_path))
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                      run_config=config)
    with pytest.raises(ConfigError, match="a record is in two partitions"):
        audited(FedAvg(), context, lambda p, n: np.arange(100))


def test_gate_binds_a_node_only_after_an_accepted_upload(app, tmp_path):
    """A refused first upload teaches the gate nothing: the node is bound by its first accepted
    one."""
    calls = []

    def first_bad(rnd, reply):
        calls.append(rnd)
        return nan_upload(rnd, reply) if rnd == 1 else reply

    _, _, _, record = run(app, tmp_path, FedAvg(fraction_evaluate=0.0),
                          hostile={104: first_bad})
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1, 2], [0, 1, 2, 3]]


def test_a_message_reply_is_checked_before_the_inner_strategy_reads_it(app, tmp_path):
    """The partition metric is the gate's: the inner strategy's aggregated metrics do not
    carry it."""
    seen = []

    class Spy(FedAvg):
        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            seen.extend(dict(next(iter(m.content.metric_records.values()))) for m in replies)
            return super().aggregate_train(server_round, replies)

    run(app, tmp_path, Spy(fraction_evaluate=0.0))
    assert seen and all(PARTITION_METRIC not in m for m in seen)


def test_message_construction_matches_flower(app):
    """The fake Grid's replies are built by Flower's own ClientApp (its reply metadata)."""
    msg = Message(content=RecordDict({"arrays": initial(app),
                                      "config": ConfigRecord({"server-round": 1, "lr": 0.1})}),
                  message_type="train", dst_node_id=101)
    context = Context(run_id=1, node_id=101, node_config={"partition-id": 0,
                                                          "num-partitions": 4},
                      state=RecordDict(), run_config={"local-epochs": 1})
    reply = app.client_app.app(msg, context)
    assert reply.metadata.src_node_id == 101
    assert next(iter(reply.content.metric_records.values()))[PARTITION_METRIC] == 0


@pytest.mark.parametrize("attacker", [{"kind": "global", "targets": [0]},
                                      {"kind": "local", "participant": 1}],
                         ids=["curious-server", "one-participant"])
def test_fedattack_attack_reads_the_recorded_run_directory(app, tmp_path, attacker):
    """`fedattack attack RUN_DIR` on what the wrappers and mods recorded: the results table of
    the aggregator (the victim's uploads) and of one participant (the models it received)."""
    from typer.testing import CliRunner

    from fedattack.cli import app as cli
    from fedattack.reporting import RESULTS_JSON

    attack = {"attacks": ["threshold-loss"], "epochs": 5}
    run(app, tmp_path, FedAvg(fraction_evaluate=0.0), attacker=attacker, attack=attack)
    result = CliRunner().invoke(cli, ["attack", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "threshold-loss" in result.output
    rows = read_json(tmp_path / "run" / RESULTS_JSON)
    observed = {"global": "the victim's uploads", "local": "the global models it received"}
    assert [r["observed"] for r in rows] == [observed[attacker["kind"]]]
    assert all(np.isfinite(r["auc"]) for r in rows)


def test_fedattack_attack_refuses_a_run_directory_without_a_finished_training(tmp_path):
    from typer.testing import CliRunner

    from fedattack.cli import app as cli

    result = CliRunner().invoke(cli, ["attack", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_an_active_malicious_participant_uploads_its_model_moved_up_the_targets_loss(
        app, tmp_path):
    from fedattack.messageapi import malicious_participant_mod
    from fedattack.messageapi.audit import AuditRun, audit_paths

    attacker = {"kind": "local", "participant": 1, "mode": "gradient-ascent"}
    config = run_config(tmp_path, audit_yaml(tmp_path, attacker=attacker))
    AuditRun.from_files(*audit_paths(config), members)  # the ServerApp prepares the run
    received = initial(app)
    trained = ArrayRecord({k: Array(v.numpy() + 0.01) for k, v in received.items()})
    msg = Message(content=RecordDict({"arrays": received,
                                      "config": ConfigRecord({"server-round": 1})}),
                  message_type="train", dst_node_id=102)

    def call_next(message, context):
        return Message(content=RecordDict({"arrays": trained, "metrics": MetricRecord(
            {"num-examples": 480})}), reply_to=message)

    def upload(partition):
        context = Context(run_id=1, node_id=102, node_config={"partition-id": partition},
                          state=RecordDict(), run_config=config)
        reply = malicious_participant_mod(msg, context, call_next)
        return next(iter(reply.content.array_records.values())).to_numpy_ndarrays()

    honest, attacker_upload = upload(0), upload(1)
    for got, sent in zip(honest, trained.to_numpy_ndarrays(), strict=True):
        np.testing.assert_array_equal(got, sent)  # every other node's upload is untouched
    moved = [not np.allclose(a, b) for a, b in
             zip(attacker_upload, trained.to_numpy_ndarrays(), strict=True)]
    assert any(moved)
    store = SnapshotStore(tmp_path / "run" / SNAPSHOT_DIR)
    assert [(r.view, r.round) for r in store.records(kind="sent")] == [("local-1", 1)]


def test_a_finished_run_directory_is_never_recorded_over(app, tmp_path):
    run(app, tmp_path, FedAvg(fraction_evaluate=0.0))
    with pytest.raises(FileExistsError, match="holds a finished run"):
        run(app, tmp_path, FedAvg(fraction_evaluate=0.0))


def test_an_interrupted_run_is_recorded_afresh(app, tmp_path):
    hostile = dict.fromkeys(NODES, lambda rnd, reply: nan_upload(rnd, reply) if rnd == 2
                            else reply)
    with pytest.raises(FederationFailed):
        run(app, tmp_path, FedAvg(fraction_evaluate=0.0), hostile=hostile)
    store = SnapshotStore(tmp_path / "run" / SNAPSHOT_DIR)
    stale = model(store, "global", "upload", 1, 0)

    def shifted(rnd, reply):  # another upload than the interrupted run's, whatever the seeds
        (key, arrays), = reply.content.array_records.items()
        reply.content.array_records[key] = ArrayRecord(
            {n: Array(a.numpy() + 0.5) for n, a in arrays.items()})
        return reply

    grid, _, store, record = run(app, tmp_path, FedAvg(fraction_evaluate=0.0),
                                 hostile={101: shifted})
    assert record["status"] == "finished" and record["refusals"] == []
    fresh = model(store, "global", "upload", 1, 0)
    for got, sent in zip(fresh, grid.replies[1, 101], strict=True):
        np.testing.assert_array_equal(got, sent)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, stale, strict=True))


def test_gate_lets_a_node_take_over_a_partition_only_from_a_node_absent_from_the_round(app):
    """A SuperNode back under a new id takes its partition over; while the holder is there, a
    second node claiming its partition is refused."""
    reference = initial(app)

    def replies(round_, claims: dict[int, int]):
        out = []
        for node, pid in claims.items():
            instruction = Message(content=RecordDict({"arrays": reference}),
                                  message_type="train", dst_node_id=node)
            out.append(Message(content=RecordDict({"arrays": reference, "metrics": MetricRecord(
                {"num-examples": 10, PARTITION_METRIC: pid})}), reply_to=instruction))
        return out

    gate = UploadGate(FedAvg(), num_partitions=2)
    gate.reference = reference
    accepted, rejected = gate.screen(1, replies(1, {11: 0, 12: 1}))
    assert [p for p, _ in accepted] == [0, 1] and not rejected
    accepted, rejected = gate.screen(2, replies(2, {11: 0, 12: 1, 13: 0}))
    assert [p for p, _ in accepted] == [0, 1]
    assert [(r["node"], r["reason"]) for r in rejected] == [(13, "partition 0 is held by node 11")]
    accepted, rejected = gate.screen(3, replies(3, {13: 0, 12: 1}))  # node 11 is gone
    assert [p for p, _ in accepted] == [0, 1] and not rejected
    assert gate.node_of[0] == 13 and 11 not in gate.partition_of
