"""A run is prepared once and passed down (issue 26.6): the runner prepares it (claims the
directory, writes the splits) and hands the prepared run to the training and to the server app
that the simulation starts in the same process, which do not prepare it again; no process-wide
memo answers for a directory whose files may have changed."""

import pytest

from fedattack import experiment as setup
from fedattack.config import parse_experiment
from fedattack.io import write_atomic
from fedattack.runner import run_experiment

EXP = {"name": "setup", "scenario": "federated",
       "data": {"dataset": "purchase100-synth", "num_records": 400, "train_size": 40,
                "nonmember_size": 100,
                "knowledge": {"train_members": 20, "train_nonmembers": 20, "test_members": 20,
                              "test_nonmembers": 20}},
       "federation": {"num_participants": 2, "rounds": 1}}


def counting(monkeypatch):
    calls = {"splits": 0, "claims": 0, "datasets": 0}
    real_splits, real_load, real_data = (setup.experiment_splits, setup.load_experiment,
                                         setup.experiment_dataset)

    def splits(exp, dataset):
        calls["splits"] += 1
        return real_splits(exp, dataset)

    def load(path):
        calls["claims"] += 1
        return real_load(path)

    def data(exp):
        calls["datasets"] += 1
        return real_data(exp)

    monkeypatch.setattr(setup, "experiment_splits", splits)
    monkeypatch.setattr(setup, "load_experiment", load)
    monkeypatch.setattr(setup, "experiment_dataset", data)
    return calls


def test_the_server_app_builds_on_the_prepared_run_it_is_given(tmp_path, monkeypatch):
    from strategies.server_app import build_strategy

    exp = parse_experiment(EXP)
    run_dir = tmp_path / "run"
    calls = counting(monkeypatch)
    prepared = setup.prepare_run(exp, run_dir)
    assert (prepared.exp, prepared.run_dir) == (exp, run_dir)
    assert calls == {"splits": 1, "claims": 0, "datasets": 1}  # a new directory: config written
    build_strategy(exp, run_dir, prepared=prepared)  # the server app, in the same process
    assert calls == {"splits": 1, "claims": 0, "datasets": 1}
    build_strategy(exp, run_dir)  # `flwr run`'s server app, in a process of its own: prepares
    assert calls["splits"] == 2 and calls["datasets"] == 2


def test_preparing_again_checks_the_files_as_they_are(tmp_path, monkeypatch):
    exp = parse_experiment(EXP)
    run_dir = tmp_path / "run"
    setup.prepare_run(exp, run_dir)
    calls = counting(monkeypatch)
    membership = run_dir / "splits" / "membership.npz"
    write_atomic(membership, membership.read_bytes()[:-10])  # damaged
    with pytest.raises(Exception, match="membership.npz"):
        setup.prepare_run(exp, run_dir)
    other = parse_experiment({**EXP, "seed": 5})
    setup.prepare_run(other, run_dir)  # nothing trained yet: the directory is reclaimed
    assert setup.load_experiment(run_dir / setup.CONFIG_FILE) == other
    setup.prepare_run(exp, run_dir)  # and back
    assert setup.load_experiment(run_dir / setup.CONFIG_FILE) == exp
    assert calls["claims"] >= 3


def test_a_standalone_run_loads_its_dataset_and_splits_once(tmp_path, monkeypatch):
    exp = parse_experiment({**EXP, "scenario": "standalone", "training": {"epochs": 1},
                            "attack": {"attacks": ["threshold-loss"]}})
    calls = counting(monkeypatch)
    import fedattack.runner as runner

    monkeypatch.setattr(runner, "experiment_dataset", setup.experiment_dataset)
    monkeypatch.setattr(runner, "experiment_splits", setup.experiment_splits)
    run_experiment(exp, tmp_path / "run", show_progress=False)
    # the pre-flight's dataset is the one every stage uses; the splits: the pre-flight's check
    # and the prepared run's
    assert calls["datasets"] == 1
    assert calls["splits"] == 2
