"""Client sampling: seeded, Flower's own draw, and attackers that handle absent victims."""

import random
import threading
import time

import numpy as np
import pytest
from flwr.common import Code, GetPropertiesRes, Status
from flwr.server import client_manager as flower_client_manager
from flwr.server.client_manager import SimpleClientManager

from fedattack.config import ConfigError, parse_experiment
from fedattack.io import read_json
from fedattack.observation import Unobserved, observed_rounds
from fedattack.snapshots import SnapshotStore
from strategies.sampling import SeededClientManager
from tests.flower_fakes import FakeProxy


class PartitionProxy(FakeProxy):
    """A node that answers get_properties with the partition it holds."""

    def __init__(self, cid: str, partition: int) -> None:
        super().__init__(cid)
        self.held = partition
        self.asked = 0

    def get_properties(self, ins, timeout, group_id):
        self.asked += 1
        return GetPropertiesRes(Status(Code.OK, ""), {"partition_id": self.held})


def manager_of(seed: int, cids_of_partitions: list[str]) -> SeededClientManager:
    manager = SeededClientManager(seed)
    for pid, cid in enumerate(cids_of_partitions):
        manager.register(PartitionProxy(cid, pid))
    return manager


def draws(manager, rounds=5, k=3):
    return [sorted(p.held for p in manager.sample(k)) for _ in range(rounds)]


def test_a_seed_names_the_sampled_partitions_whatever_the_node_ids():
    rng = np.random.default_rng(0)
    first = manager_of(7, [str(c) for c in rng.permutation(10_000)[:10]])
    again = manager_of(7, [str(c) for c in rng.permutation(10_000)[:10]])  # other random ids
    assert draws(first) == draws(again)
    other_seed = manager_of(8, [str(c) for c in range(10)])
    assert draws(other_seed) != draws(manager_of(7, [str(c) for c in range(10)]))
    for sample in draws(manager_of(7, [str(c) for c in range(10)]), rounds=20):
        assert len(set(sample)) == 3 and all(0 <= p < 10 for p in sample)


def test_the_draw_is_flowers_own_with_a_seeded_generator(monkeypatch):
    cids = [f"n{pid:02d}" for pid in range(10)]  # connected in partition order
    seeded = manager_of(3, cids)
    flower = SimpleClientManager()
    for proxy in seeded.clients.values():
        flower.register(proxy)
    monkeypatch.setattr(flower_client_manager, "random", random.Random(3))
    for _ in range(5):
        assert [p.cid for p in seeded.sample(4)] == [p.cid for p in flower.sample(4)]


def test_each_node_is_asked_its_partition_once_and_not_at_all_when_all_train():
    manager = manager_of(1, [str(c) for c in range(6)])
    assert len(manager.sample(6)) == 6
    assert all(p.asked == 0 for p in manager.clients.values())
    draws(manager, rounds=4, k=2)
    assert all(p.asked == 1 for p in manager.clients.values())


class SlowProxy(PartitionProxy):
    """A node whose answer takes a message round trip (here 50 ms)."""

    in_flight = 0
    most_in_flight = 0
    lock = threading.Lock()

    def get_properties(self, ins, timeout, group_id):
        with SlowProxy.lock:
            SlowProxy.in_flight += 1
            SlowProxy.most_in_flight = max(SlowProxy.most_in_flight, SlowProxy.in_flight)
        time.sleep(0.05)
        with SlowProxy.lock:
            SlowProxy.in_flight -= 1
        return super().get_properties(ins, timeout, group_id)


def test_the_nodes_are_asked_together_not_one_after_another():
    manager = SeededClientManager(0)
    for pid in range(200):
        manager.register(SlowProxy(f"n{pid}", pid))
    started = time.perf_counter()
    sample = manager.sample(10)
    took = time.perf_counter() - started
    assert len(sample) == 10 and all(p.asked == 1 for p in manager.clients.values())
    assert SlowProxy.most_in_flight > 1
    assert took < 200 * 0.05 / 4  # one after another: 10 s
    # the same draw as a manager that asked one node at a time
    serial = SeededClientManager(0)
    for pid in range(200):
        serial.register(PartitionProxy(f"n{pid}", pid))
    assert sorted(p.held for p in sample) == sorted(p.held for p in serial.sample(10))


BASE = {"name": "s", "scenario": "federated", "data": {"dataset": "purchase100-synth"}}


def test_sampling_settings_are_checked():
    fed = parse_experiment({**BASE, "federation": {"num_participants": 10,
                                                   "clients_per_round": 3}}).federation
    assert fed.sampled == 3
    with pytest.raises(ConfigError, match="clients_per_round 11 exceeds num_participants=10"):
        parse_experiment({**BASE, "federation": {"num_participants": 10,
                                                 "clients_per_round": 11}})
    with pytest.raises(ConfigError, match="isolation sends a victim its own model every round"):
        parse_experiment({**BASE, "federation": {"num_participants": 10, "clients_per_round": 3},
                          "attacker": {"kind": "global", "mode": "isolating", "targets": [1]}})


def test_a_victim_is_observed_in_the_rounds_it_was_sampled_in(tmp_path):
    store = SnapshotStore(tmp_path)
    for server_round, sampled in ((1, (0, 1)), (2, (1, 2)), (3, (0, 2))):
        for pid in sampled:
            store.write("global", "upload", server_round, {"w": np.zeros(2)}, partition=pid)
    view = store.view("global")
    exp = parse_experiment({**BASE, "federation": {"num_participants": 3, "rounds": 3,
                                                   "clients_per_round": 2}})
    assert observed_rounds(exp, view, "upload", 0) == [1, 3]
    assert observed_rounds(exp, view, "upload", 1) == [1, 2]
    listed = parse_experiment({**BASE, "federation": {"num_participants": 3, "rounds": 3,
                                                      "clients_per_round": 2},
                               "attack": {"snapshots": [2]}})
    assert observed_rounds(listed, view, "upload", 1) == [2]
    with pytest.raises(Unobserved, match="participant 0 was sampled in none of the observed "
                                         "rounds"):
        observed_rounds(listed, view, "upload", 0)


def test_a_sampled_non_iid_federation_in_a_flower_simulation(tmp_path):
    from fedattack.runner import run_experiment

    exp = parse_experiment({
        "name": "sampled", "seed": 2, "scenario": "federated",
        "data": {"dataset": "purchase100-synth", "train_size": 100,
                 "nonmember_size": 5000, "partition": "dirichlet", "alpha": 1.0,
                 "min_partition_size": 45,
                 "knowledge": {"train_members": 20, "train_nonmembers": 20, "test_members": 20,
                               "test_nonmembers": 20}},
        "federation": {"num_participants": 8, "clients_per_round": 2, "rounds": 3},
        "attacker": {"kind": "global", "mode": "passive"},
        "attack": {"attacks": ["threshold-loss"]}})
    record, results = run_experiment(exp, tmp_path / "run", show_progress=False)
    taking_part = [r["accepted"] for r in record["rounds"]]
    # every node said its partition: the draw is the seed's, over partitions 0..7 in order
    draw = random.Random(exp.seed)
    assert taking_part == [sorted(draw.sample(range(8), 2)) for _ in range(3)]
    seen = sorted({p for a in taking_part for p in a})
    victims = {r["victim"] for r in results}
    assert victims == {f"participant-{p}" for p in seen} | ({f"mean of {len(seen)}"}
                                                             if len(seen) > 1 else set())
    counts = read_json(tmp_path / "run" / "class-counts.json")
    assert min(counts["sizes"]) >= 45 and len(set(counts["sizes"])) > 1
    store = SnapshotStore(tmp_path / "run" / "snapshots")
    for server_round, accepted in enumerate(taking_part, start=1):
        uploads = store.records(view="global", kind="upload", round=server_round)
        assert sorted(r.partition for r in uploads) == accepted  # only the sampled ones


@pytest.mark.slow
def test_a_hundred_participants_ten_per_round_in_simulation(tmp_path):
    from fedattack.runner import run_experiment

    exp = parse_experiment({
        "name": "hundred", "seed": 0, "scenario": "federated",
        "data": {"dataset": "purchase100-synth", "num_records": 6000, "train_size": 20,
                 "nonmember_size": 500,
                 "knowledge": {"train_members": 10, "train_nonmembers": 10, "test_members": 10,
                               "test_nonmembers": 10}},
        "federation": {"num_participants": 100, "clients_per_round": 10, "rounds": 3,
                       "record_rounds": "none"}})
    record, _ = run_experiment(exp, tmp_path / "run", show_progress=False)
    assert record["status"] == "finished"
    assert all(len(r["accepted"]) == 10 for r in record["rounds"])
