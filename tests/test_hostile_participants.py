"""Untrusted participants: every damaged upload is refused with its reason, the round goes on
with the others, and run.json lists each refusal (issue 11, item 2); a round in which nothing
was accepted fails the run with one line (item 4).

Fast tests drive the strategies with hand-made results; the last ones run real Flower
simulations in which participants (tests/hostile_participants.py) damage their uploads.
"""

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays

from fedattack.config import AttackerConfig, Experiment
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.protocol import FederationFailed
from fedattack.snapshots import SnapshotStore
from strategies.inner import weighted_average
from strategies.malicious import MaliciousAggregator
from strategies.recording import RecordingStrategy
from tests.flower_fakes import FakeProxy, client_manager, fit_res
from tests.hostile_participants import ALL_BAD_IN_ROUND_2, MIXED, damage

NAMES = ["w", "b", "count"]
SIZES = [100, 100, 100, 100]


def model_weights(rng):
    return [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32),
            np.array(rng.integers(0, 100), np.int64)]


def honest_metrics(pid):
    return {"partition_id": pid, "train_loss": 0.7, "train_accuracy": 0.6}


def strategy_for(tmp_path, cls=RecordingStrategy, failures=None, **kwargs):
    rng = np.random.default_rng(0)
    return cls(store=SnapshotStore(tmp_path / "snapshots"), record_round=lambda r: True,
               weight_names=NAMES, fit_config=lambda r: {"server-round": r},
               partition_sizes=SIZES, on_failure=None if failures is None else failures.append,
               initial_parameters=ndarrays_to_parameters(model_weights(rng)),
               min_fit_clients=2, min_available_clients=2, **kwargs), rng


def play(strategy, manager, proxies, server_round, uploads, parameters=None):
    """One round: uploads[i] = (weights, n, metrics) from proxies[i] (or a Parameters)."""
    if parameters is None:
        parameters = strategy.initialize_parameters(manager)
    strategy.configure_fit(server_round, parameters, manager)
    results = []
    for proxy, (weights, n, metrics) in zip(proxies, uploads, strict=False):
        raw = isinstance(weights, Parameters)
        res = fit_res([] if raw else weights, n, None, metrics=metrics)
        if raw:
            res.parameters = weights
        results.append((proxy, res))
    new, _ = strategy.aggregate_fit(server_round, results, [])
    return new, strategy.round_logs[-1]


def pickled_object_array() -> Parameters:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"payload": 1}], dtype=object), allow_pickle=True)
    return Parameters(tensors=[buffer.getvalue()] * 3, tensor_type="numpy.ndarray")


CASES = [  # (case of tests/hostile_participants.damage, or a special one; phrase of the reason)
    ("no-partition", "missing fit metrics ['partition_id']"),
    ("negative-partition", "'partition_id' -1 outside 0..3"),
    ("out-of-range-partition", "'partition_id' 99 outside 0..3"),
    ("string-partition", "not an integer"),
    ("float-partition", "not an integer"),
    ("bool-partition", "not an integer"),
    ("negative-examples", "num_examples -1000000 outside 1..100"),
    ("zero-examples", "num_examples 0 outside 1..100"),
    ("absurd-examples", "num_examples 1000000000 outside 1..100"),
    ("float-examples", "num_examples is 5.5, not an integer"),
    ("extra-metric", "unexpected fit metrics ['exfiltrated']"),
    ("missing-metric", "missing fit metrics ['train_loss']"),
    ("nan-loss", "'train_loss' is nan, not a number"),
    ("accuracy-above-1", "'train_accuracy' is 7.0, outside [0, 1]"),
    ("negative-epsilon", "'epsilon' is -1.0, negative"),
    ("nan-weights", "holds NaN or Inf"),
    ("inf-weights", "holds NaN or Inf"),
    ("float64-weights", "dtype float64, expected float32"),
    ("wrong-shape", "shape (1, 4), expected (3, 4)"),
    ("unreadable-bytes", "unreadable tensors"),
    ("pickled-object", "unreadable tensors"),
]


def damaged(case, weights, n, metrics):
    metrics = dict(metrics)
    special = {"float-partition": ("partition_id", 2.0), "bool-partition": ("partition_id", True),
               "nan-loss": ("train_loss", float("nan")),
               "accuracy-above-1": ("train_accuracy", 7.0), "negative-epsilon": ("epsilon", -1.0)}
    if case in special:
        key, value = special[case]
        metrics[key] = value
        return weights, n, metrics
    if case == "zero-examples":
        return weights, 0, metrics
    if case == "float-examples":
        return weights, 5.5, metrics
    if case == "unreadable-bytes":
        return Parameters(tensors=[b"\x93NUMPY garbage"] * 3, tensor_type="numpy.ndarray"), n, \
            metrics
    if case == "pickled-object":
        return pickled_object_array(), n, metrics
    return damage(case, weights, n, metrics)


@pytest.mark.parametrize("case, reason", CASES)
def test_each_damaged_upload_is_refused_with_its_reason_and_the_round_goes_on(
        tmp_path, case, reason, caplog):
    failures = []
    strategy, rng = strategy_for(tmp_path, failures=failures)
    manager, proxies = client_manager(3)
    good = [(model_weights(rng), 40, honest_metrics(0)),
            (model_weights(rng), 60, honest_metrics(1))]
    bad = damaged(case, model_weights(rng), 50, honest_metrics(2))
    new, round_log = play(strategy, manager, proxies, 1, good + [bad])
    assert round_log.accepted == [0, 1]
    (refusal,) = round_log.rejected
    assert refusal["node"] == proxies[2].cid and reason in refusal["reason"], refusal
    assert "refused upload" in caplog.text and reason in caplog.text
    for got, want in zip(parameters_to_ndarrays(new),
                         weighted_average([(w, n) for w, n, _ in good]), strict=True):
        np.testing.assert_array_equal(got, want)  # the refused upload changed nothing
    store = strategy.store
    assert sorted(r.partition for r in store.records(view="global", kind="upload")) == [0, 1]
    assert strategy.failure is None and failures == []
    # bound from what each node's configuration says, before round 1, whatever it uploaded
    assert strategy.partition_of == {p.cid: i for i, p in enumerate(proxies)}


def test_partitions_are_bound_once_before_the_first_round_and_asked_once(tmp_path):
    strategy, rng = strategy_for(tmp_path)
    manager, proxies = client_manager(3)
    parameters = strategy.initialize_parameters(manager)
    strategy.configure_fit(1, parameters, manager)
    assert strategy.partition_of == {p.cid: i for i, p in enumerate(proxies)}
    assert [p.asked for p in proxies] == [1, 1, 1]
    strategy.configure_fit(2, parameters, manager)
    assert [p.asked for p in proxies] == [1, 1, 1]


def test_a_participant_claiming_anothers_partition_is_refused_and_the_owner_aggregated(
        tmp_path):
    strategy, rng = strategy_for(tmp_path)
    manager, proxies = client_manager(3)
    uploads = [(model_weights(rng), 10, honest_metrics(pid)) for pid in (0, 1, 1)]
    new, round_log = play(strategy, manager, proxies, 1, uploads)
    assert round_log.accepted == [0, 1]
    (refusal,) = round_log.rejected
    assert refusal["node"] == proxies[2].cid
    assert refusal["partition"] == 1 and refusal["bound"] == 2
    assert (f"claims partition 1 (node {proxies[1].cid}'s), but this node is bound to "
            "partition 2") in refusal["reason"]
    for got, want in zip(parameters_to_ndarrays(new),
                         weighted_average([(w, n) for w, n, _ in uploads[:2]]), strict=True):
        np.testing.assert_array_equal(got, want)
    assert round_log.affecting({1}) == [refusal] and round_log.affecting({2}) == [refusal]
    assert round_log.affecting({0}) == []


def test_a_node_claiming_anothers_partition_every_round_never_excludes_the_owner(tmp_path):
    strategy, rng = strategy_for(tmp_path)
    manager, proxies = client_manager(4)
    new = None
    for server_round in (1, 2, 3):
        uploads = [(model_weights(rng), 10, honest_metrics(p)) for p in (0, 1, 0, 1)]
        new, round_log = play(strategy, manager, proxies, server_round, uploads, new)
        assert round_log.accepted == [0, 1]
        reasons = {r["node"]: r["reason"] for r in round_log.rejected}
        assert set(reasons) == {proxies[2].cid, proxies[3].cid}
        assert "bound to partition 2" in reasons[proxies[2].cid]
        assert "bound to partition 3" in reasons[proxies[3].cid]
    # alone, with the owner absent, the impostor is still refused
    _, round_log = play(strategy, manager, [proxies[2]], 4,
                        [(model_weights(rng), 10, honest_metrics(0))], new)
    assert round_log.accepted == []
    assert "bound to partition 2" in round_log.rejected[0]["reason"]


def test_a_reconnected_node_takes_over_its_partition_when_the_old_node_is_gone(tmp_path):
    strategy, rng = strategy_for(tmp_path)
    manager, proxies = client_manager(2)
    new, _ = play(strategy, manager, proxies, 1,
                  [(model_weights(rng), 10, honest_metrics(p)) for p in range(2)])
    manager.unregister(proxies[1])
    back = FakeProxy("2001", 1)  # the same SuperNode under a new node id
    manager.register(back)
    _, round_log = play(strategy, manager, [proxies[0], back], 2,
                        [(model_weights(rng), 10, honest_metrics(p)) for p in range(2)], new)
    assert round_log.accepted == [0, 1] and round_log.rejected == []
    assert strategy.partition_of == {proxies[0].cid: 0, back.cid: 1}


def test_a_newcomer_claiming_a_connected_nodes_partition_stays_unbound(tmp_path):
    strategy, rng = strategy_for(tmp_path)
    manager, proxies = client_manager(2)
    new, _ = play(strategy, manager, proxies, 1,
                  [(model_weights(rng), 10, honest_metrics(p)) for p in range(2)])
    newcomer = FakeProxy("2001", 1)
    manager.register(newcomer)
    _, round_log = play(strategy, manager, [*proxies, newcomer], 2,
                        [(model_weights(rng), 10, honest_metrics(p)) for p in (0, 1, 1)], new)
    assert round_log.accepted == [0, 1]
    (refusal,) = round_log.rejected
    assert refusal["node"] == "2001" and refusal["bound"] is None
    assert f"which node {proxies[1].cid} was bound to first" in refusal["reason"]


def test_two_nodes_saying_they_hold_one_partition_fail_the_run_before_training(tmp_path):
    failures = []
    strategy, _ = strategy_for(tmp_path, failures=failures)
    manager, _ = client_manager(3, partitions=[0, 1, 1])
    sent = strategy.configure_fit(1, strategy.initialize_parameters(manager), manager)
    assert sent == []
    (error,) = failures
    assert isinstance(error, FederationFailed) and "\n" not in str(error)
    assert str(error).startswith("round 1: nodes 1001, 1002 all say they hold partition 1")


def test_malicious_aggregator_has_no_model_for_an_isolated_node_whose_upload_was_refused(
        tmp_path):
    strategy, rng = strategy_for(
        tmp_path, MaliciousAggregator, attacker=AttackerConfig(mode="isolating", targets=[0],
                                                                isolate_from=2),
        isolated={0}, ascend=None)
    manager, proxies = client_manager(4)
    uploads = [damage("nan-weights", model_weights(rng), 10, honest_metrics(0)),
               (model_weights(rng), 10, honest_metrics(1)),
               (model_weights(rng), 10, honest_metrics(2)),
               (model_weights(rng), 10, honest_metrics(2))]
    new, round_log = play(strategy, manager, proxies, 1, uploads)
    assert round_log.accepted == [1, 2]
    assert strategy.partition_of == {p.cid: i for i, p in enumerate(proxies)}
    assert 0 not in strategy.own_model  # nothing to send the isolated participant yet
    sent = strategy.configure_fit(2, new, manager)
    new_arrays = parameters_to_ndarrays(new)
    for _, ins in sent:  # everyone gets the aggregate
        for got, want in zip(parameters_to_ndarrays(ins.parameters), new_arrays, strict=True):
            np.testing.assert_array_equal(got, want)


def test_a_round_with_no_accepted_upload_fails_the_run_with_each_reason(tmp_path):
    failures = []
    strategy, rng = strategy_for(tmp_path, failures=failures)
    manager, proxies = client_manager(2)
    uploads = [damage("nan-weights", model_weights(rng), 10, honest_metrics(0)),
               damage("negative-examples", model_weights(rng), 10, honest_metrics(1))]
    new, round_log = play(strategy, manager, proxies, 1, uploads)
    assert new is None
    (error,) = failures
    assert isinstance(error, FederationFailed) and strategy.failure is error
    message = str(error)
    assert message.startswith("round 1: no upload was accepted")
    assert "holds NaN or Inf" in message and "num_examples -1000000" in message
    assert "\n" not in message
    # the remaining rounds send nothing and evaluate nothing
    assert strategy.configure_fit(2, strategy.initialize_parameters(manager), manager) == []
    assert strategy.evaluate(2, strategy.initialize_parameters(manager)) is None


class FullDiskFile:
    """A file whose writes fail as on a full disk."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def fill_disk(monkeypatch):
    """From now on every atomic write (snapshots, run.json) fails with ENOSPC."""
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDiskFile(real_fdopen(fd, *a, **k)))


def test_a_full_disk_fails_the_run_and_leaves_no_partial_file(tmp_path, monkeypatch):
    failures = []
    strategy, rng = strategy_for(tmp_path, failures=failures)
    manager, proxies = client_manager(2)
    new, _ = play(strategy, manager, proxies, 1,
                  [(model_weights(rng), 10, honest_metrics(p)) for p in range(2)])
    before = sorted(p.name for p in (tmp_path / "snapshots").rglob("*"))
    fill_disk(monkeypatch)
    new2, _ = play(strategy, manager, proxies, 2,
                   [(model_weights(rng), 10, honest_metrics(p)) for p in range(2)], new)
    monkeypatch.undo()
    assert new2 is None
    (error,) = failures
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert sorted(p.name for p in (tmp_path / "snapshots").rglob("*")) == before
    assert strategy.configure_fit(3, new, manager) == []


# ------------------------------------------------------------- real Flower simulations

def hostile_experiment(name: str, participants: int, rounds: int) -> Experiment:
    return Experiment(
        name=name, seed=5, scenario="federated",
        data={"dataset": "purchase100-synth", "num_records": 3000, "train_size": 300,
              "nonmember_size": 600,
              "knowledge": {"train_members": 50, "train_nonmembers": 50, "test_members": 50,
                            "test_nonmembers": 50}},
        model={"arch": "purchase-fc"},
        federation={"num_participants": participants, "rounds": rounds, "record_rounds": "all"})


EXPECTED_REASONS = {  # case of tests/hostile_participants.MIXED -> phrase of its refusal
    "negative-partition": "'partition_id' -1 outside 0..4",
    "out-of-range-partition": "'partition_id' 99 outside 0..4",
    "string-partition": "not an integer",
    "claims-partition-0": "claims partition 0 (node",
    "negative-examples": "num_examples -1000000 outside 1..300",
    "absurd-examples": "num_examples 1000000000 outside 1..300",
    "extra-metric": "unexpected fit metrics ['exfiltrated']",
    "missing-metric": "missing fit metrics ['train_loss']",
    "nan-weights": "holds NaN or Inf",
    "inf-weights": "holds NaN or Inf",
    "float64-weights": "dtype float64",
    "raises": "failed",
}


def test_simulation_with_hostile_participants_finishes_and_lists_each_refusal(
        tmp_path, monkeypatch):
    import fedattack.simulation as simulation

    monkeypatch.setattr(simulation, "CLIENT_APP_FACTORY",
                        "tests.hostile_participants:make_mixed_client_app")
    exp = hostile_experiment("hostile", participants=5, rounds=3)
    record = simulation.run_federated(exp, tmp_path)
    assert record["status"] == "finished" and read_json(tmp_path / RUN_FILE) == record
    assert [h["round"] for h in record["history"]] == [0, 1, 2, 3]
    # Partition 0 is honest throughout; 3 is honest in round 2 only after its bad round 1...
    honest = {r: sorted({p for p in range(5)} - {p for (p, rr) in MIXED if rr == r})
              for r in (1, 2, 3)}
    assert [r["accepted"] for r in record["rounds"]] == [honest[1], honest[2], honest[3]]
    assert honest[1] == [0] and honest[2] == [0] and honest[3] == [0]
    refusals = record["refusals"]
    assert all(set(r) == {"round", "node", "partition", "bound", "reason"} for r in refusals)
    for (_, server_round), case in MIXED.items():
        matching = [r for r in refusals if r["round"] == server_round
                    and EXPECTED_REASONS[case] in r["reason"]]
        assert matching, (case, refusals)
    assert len(refusals) == len(MIXED)
    # each recorded global model is the FedAvg of the accepted uploads alone
    store = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    for server_round in (1, 2, 3):
        ups = store.records(view="global", kind="upload", round=server_round)
        assert [u.partition for u in ups] == [0]
        (glob,) = store.records(view="global", kind="global", round=server_round)
        for got, want in zip(store.read_arrays(glob), store.read_arrays(ups[0]), strict=True):
            np.testing.assert_array_equal(got, want)


def run_cli(args: list[str], factory: str, cwd: Path,
            prelude: str = "") -> subprocess.CompletedProcess:
    """`fedattack run ...` in a fresh interpreter whose ClientApp factory is `factory`."""
    script = textwrap.dedent(f"""
        import sys
        import fedattack.simulation as simulation
        simulation.CLIENT_APP_FACTORY = {factory!r}
        {prelude}
        from fedattack.cli import main
        sys.argv = ["fedattack", *{args!r}]
        main()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def write_experiment(path: Path, exp: Experiment) -> None:
    import yaml

    path.write_text(yaml.safe_dump(json.loads(exp.model_dump_json())))


def test_simulation_whose_round_accepts_nothing_fails_with_one_line(tmp_path):
    exp = hostile_experiment("all-bad", participants=3, rounds=3)
    write_experiment(tmp_path / "exp.yaml", exp)
    out = tmp_path / "run"
    done = run_cli(["run", "exp.yaml", "--out", str(out), "--quiet"],
                   "tests.hostile_participants:make_all_bad_client_app", tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors == [done.stderr.strip().splitlines()[-1]]
    (line,) = errors
    assert line.startswith("error: round 2: no upload was accepted")
    for phrase in ("holds NaN or Inf", "'partition_id' 99 outside 0..2",
                   "num_examples 1000000000 outside 1..300"):
        assert phrase in line
    record = read_json(out / RUN_FILE)
    assert record["status"] == "failed" and record["error"] in line
    assert [r["round"] for r in record["rounds"]] == [1, 2]
    assert len(record["refusals"]) == len(ALL_BAD_IN_ROUND_2)
    assert [h["round"] for h in record["history"]] == [0, 1]  # nothing evaluated after it


FULL_DISK_FROM_ROUND_2 = """
import errno, os
import fedattack.snapshots as snapshots
real_write_many, real_fdopen = snapshots.SnapshotStore.write_many, os.fdopen
class FullDiskFile:
    def __init__(self, fh): self.fh = fh
    def write(self, data): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    def __getattr__(self, name): return getattr(self.fh, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.fh.close()
def write_many(self, view, batch):  # every snapshot goes through here (write included)
    batch = list(batch)
    if any(s.round >= 2 for s in batch):  # the disk fills up: from now on every write fails
        os.fdopen = lambda fd, *a, **k: FullDiskFile(real_fdopen(fd, *a, **k))
    return real_write_many(self, view, batch)
snapshots.SnapshotStore.write_many = write_many
"""


@pytest.mark.slow
def test_a_full_disk_during_a_simulation_fails_with_one_line_and_nothing_half_written(
        tmp_path):
    exp = hostile_experiment("full-disk", participants=2, rounds=3)
    write_experiment(tmp_path / "exp.yaml", exp)
    out = tmp_path / "run"
    done = run_cli(["run", "exp.yaml", "--out", str(out), "--quiet"],
                   "clients.client_app:make_client_app", tmp_path,
                   prelude=FULL_DISK_FROM_ROUND_2.replace("\n", "\n        "))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on device") and "run the same command" in last
    assert read_json(out / RUN_FILE)["status"] != "finished"
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == [], leftovers
    store = SnapshotStore(out / SNAPSHOT_DIR)  # every manifest still reads, its files verify
    for rec in store.records():
        store.read_arrays(rec)
    assert {r.round for r in store.records(view="global", kind="upload")} == {1}


# ------------------------------------------- a participant in another's place (issue 25, 1-2)

def run_with(monkeypatch, tmp_path, factory: str, exp: Experiment) -> dict:
    import fedattack.simulation as simulation

    monkeypatch.setattr(simulation, "CLIENT_APP_FACTORY", f"tests.hostile_participants:{factory}")
    return simulation.run_federated(exp, tmp_path)


def test_under_client_sampling_an_impostor_is_refused_and_the_owner_aggregated(
        tmp_path, monkeypatch):
    exp = hostile_experiment("impostor", participants=4, rounds=4)
    exp = exp.model_copy(update={"federation": exp.federation.model_copy(
        update={"clients_per_round": 2})})
    record = run_with(monkeypatch, tmp_path, "make_impostor_client_app", exp)
    assert record["status"] == "finished"
    binding = record["binding"]
    assert sorted(binding) == ["0", "1", "2", "3"] and len(set(binding.values())) == 4
    impostor, owner = binding["1"], binding["3"]
    store = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    impostor_rounds = owner_rounds = 0
    for entry in record["rounds"]:
        server_round = entry["round"]
        refused = {r["node"]: r for r in entry["rejected"]}
        assert 1 not in entry["accepted"]  # every upload of the impostor is refused...
        if impostor in refused:
            impostor_rounds += 1
            assert refused[impostor]["partition"] == 3 and refused[impostor]["bound"] == 1
            assert f"claims partition 3 (node {owner}'s), but this node is bound to partition 1" \
                in refused[impostor]["reason"]
        assert owner not in refused  # ...and the owner of partition 3 never is
        if 3 in entry["accepted"]:
            owner_rounds += 1
        uploads = {u.partition for u in store.records(view="global", kind="upload",
                                                      round=server_round)}
        assert uploads == set(entry["accepted"])
    assert impostor_rounds >= 1 and owner_rounds >= 1, record["rounds"]
    # the refusals touched attacked participants 1 and 3: run.json and the results say so
    touched = record["attacked_refusals"]  # the victim is everyone's records here
    assert len(touched) == impostor_rounds
    assert all(r["node"] == impostor and r["partition"] == 3 for r in touched)
    from fedattack.membership import victim_refusals
    for partitions in ((1,), (3,), (0, 1, 2, 3)):
        (lines,) = victim_refusals(record, partitions).values()
        assert len(lines) == impostor_rounds and "claims partition 3" in lines[0]
    assert victim_refusals(record, (0,)) == {} and victim_refusals(record, (2,)) == {}


def test_a_participant_claiming_anothers_partition_every_round_excludes_no_one(
        tmp_path, monkeypatch):
    exp = hostile_experiment("liar", participants=3, rounds=3)
    record = run_with(monkeypatch, tmp_path, "make_liar_client_app", exp)
    assert record["status"] == "finished"
    assert [r["accepted"] for r in record["rounds"]] == [[0, 2]] * 3
    liar = record["binding"]["1"]
    for entry in record["rounds"]:
        (refusal,) = entry["rejected"]
        assert refusal["node"] == liar and refusal["bound"] == 1
        assert "bound to partition 1" in refusal["reason"]
    store = SnapshotStore(tmp_path / SNAPSHOT_DIR)
    for server_round in (1, 2, 3):
        ups = store.records(view="global", kind="upload", round=server_round)
        assert [u.partition for u in ups] == [0, 2]
