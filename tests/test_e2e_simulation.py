"""A real Flower simulation on Ray: 3 participants, 2 rounds, a small model.

The recorded uploads must be bit-identical to what each participant returns when its training is
replayed outside Flower, and each recorded global model must be the FedAvg of the round's uploads.
"""

import os

import numpy as np
import pytest
import torch

from fedattack.config import Experiment
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR
from fedattack.io import read_json
from fedattack.simulation import Resources, run_federated
from fedattack.snapshots import SnapshotStore
from tests.replay import assert_uploads_replay_and_globals_are_fedavg

EXP = Experiment(
    name="e2e",
    seed=3,
    scenario="federated",
    data={
        "dataset": "purchase100-synth",
        "num_records": 3000,
        "train_size": 300,
        "nonmember_size": 600,
        "knowledge": {
            "train_members": 100,
            "train_nonmembers": 100,
            "test_members": 100,
            "test_nonmembers": 100,
        },
    },
    model={"arch": "purchase-fc"},
    federation={"num_participants": 3, "rounds": 2, "record_rounds": "all"},
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("e2e")
    pythonpath = os.environ.get("PYTHONPATH")
    record = run_federated(EXP, run_dir)
    assert os.environ.get("PYTHONPATH") == pythonpath  # Ray's start put sys.path in it
    return run_dir, record


def test_run_finishes_with_history(finished_run):
    run_dir, record = finished_run
    assert record["status"] == "finished"
    assert read_json(run_dir / RUN_FILE) == record
    assert [h["round"] for h in record["history"]] == [0, 1, 2]
    for entry in record["history"]:
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert np.isfinite(entry[key])
    assert [r["accepted"] for r in record["rounds"]] == [[0, 1, 2], [0, 1, 2]]
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "splits" / "membership.npz").exists()


def test_uploads_bit_identical_to_replayed_clients_and_global_is_fedavg(finished_run):
    run_dir, _ = finished_run
    store = SnapshotStore(run_dir / SNAPSHOT_DIR)
    threads = Resources.for_experiment(EXP).client_cpus  # same thread count as the Ray actors
    saved_threads = torch.get_num_threads()
    try:
        assert_uploads_replay_and_globals_are_fedavg(store, EXP, rounds=2, participants=3,
                                                     threads=threads)
    finally:
        torch.set_num_threads(saved_threads)


def test_global_model_changes_and_learns(finished_run):
    run_dir, record = finished_run
    first, last = record["history"][0], record["history"][-1]
    assert last["train_loss"] < first["train_loss"]
