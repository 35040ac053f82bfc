"""Replaying a recorded federated run outside Flower, shared by the simulation and deployment
end-to-end tests."""

from __future__ import annotations

from clients.honest import HonestClient
from fedattack import protocol
from fedattack.config import Experiment
from fedattack.snapshots import SnapshotStore
from fedattack.training import lr_at
from strategies.inner import weighted_average


def assert_uploads_replay_and_globals_are_fedavg(store: SnapshotStore, exp: Experiment,
                                                 rounds: int, participants: int,
                                                 threads: int | None = None) -> None:
    """Each recorded upload is bit-identical to the honest client's training replayed on the
    model it was sent, and each recorded global model is the FedAvg of that round's uploads."""
    for server_round in range(1, rounds + 1):
        (sent,) = store.records(view="global", kind="global", round=server_round - 1)
        config = {protocol.SERVER_ROUND: server_round,
                  protocol.LR: lr_at(exp.training, server_round - 1),
                  protocol.EXPERIMENT: exp.model_dump_json()}
        uploads = []
        for pid in range(participants):
            replay, n, metrics = HonestClient(pid, threads=threads).fit(
                store.read_arrays(sent), config)
            assert metrics[protocol.PARTITION_ID] == pid
            (rec,) = store.records(view="global", kind="upload", round=server_round,
                                   partition=pid)
            recorded = store.read_arrays(rec)
            assert len(recorded) == len(replay)
            for got, want in zip(recorded, replay, strict=True):
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
            uploads.append((recorded, n))
        (glob,) = store.records(view="global", kind="global", round=server_round)
        for got, want in zip(store.read_arrays(glob), weighted_average(uploads), strict=True):
            assert got.tobytes() == want.tobytes()
