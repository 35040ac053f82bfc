"""The benchmarks' tiny mode (`--tiny`): the same measurement on a problem shrunk to seconds, so
that tests/test_benchmarks.py runs every benchmark and none of them rots unnoticed. A tiny run's
figures mean nothing; it changes sizes only, never what is measured."""

from __future__ import annotations

from fedattack.config import Experiment


def shrink(exp: Experiment) -> Experiment:
    """`exp` with two participants, two rounds, small splits and a small attack network."""
    d = exp.model_dump()
    d["data"].update(num_records=3000, train_size=300, nonmember_size=600,
                     knowledge={"train_members": 100, "train_nonmembers": 100,
                                "test_members": 100, "test_nonmembers": 100})
    d["federation"].update(num_participants=2, rounds=2, record_rounds=[1, 2])
    if d.get("attack") is not None:
        d["attack"].update(snapshots=[1, 2], epochs=2, kernels=8)
    return Experiment.model_validate(d)
