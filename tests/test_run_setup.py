"""A federated run is set up once per process: the runner, the simulation and the server app
all ask for it, and only the first does the work while the run directory's files are unchanged."""

from fedattack import experiment as setup
from fedattack.config import parse_experiment
from fedattack.io import write_atomic

EXP = {"name": "setup", "scenario": "federated",
       "data": {"dataset": "purchase100-synth", "num_records": 400, "train_size": 40,
                "nonmember_size": 100,
                "knowledge": {"train_members": 20, "train_nonmembers": 20, "test_members": 20,
                              "test_nonmembers": 20}},
       "federation": {"num_participants": 2, "rounds": 1}}


def counting(monkeypatch):
    calls = {"splits": 0, "claims": 0}
    real_splits, real_load = setup.experiment_splits, setup.load_experiment

    def splits(exp, dataset):
        calls["splits"] += 1
        return real_splits(exp, dataset)

    def load(path):
        calls["claims"] += 1
        return real_load(path)

    monkeypatch.setattr(setup, "experiment_splits", splits)
    monkeypatch.setattr(setup, "load_experiment", load)
    return calls


def test_a_federated_run_is_prepared_once_by_the_simulation_and_the_server_app(tmp_path,
                                                                              monkeypatch):
    from strategies.server_app import build_strategy

    exp = parse_experiment(EXP)
    run_dir = tmp_path / "run"
    calls = counting(monkeypatch)
    setup.claim_run_dir(exp, run_dir)  # the runner
    first = setup.prepare_run(exp, run_dir)  # the simulation's pre-flight
    build_strategy(exp, run_dir)  # the server app, in the same process
    assert calls == {"splits": 1, "claims": 0}  # a new directory: its config was written
    assert setup.prepare_run(exp, run_dir)[1] is first[1]


def test_a_changed_file_or_another_experiment_is_checked_again(tmp_path, monkeypatch):
    exp = parse_experiment(EXP)
    run_dir = tmp_path / "run"
    setup.prepare_run(exp, run_dir)
    calls = counting(monkeypatch)
    membership = run_dir / "splits" / "membership.npz"
    write_atomic(membership, membership.read_bytes() + b"")  # same bytes, another file
    setup.prepare_run(exp, run_dir)
    assert calls == {"splits": 1, "claims": 0}  # the splits checked again, the config not
    config = run_dir / setup.CONFIG_FILE
    write_atomic(config, config.read_bytes())
    setup.prepare_run(exp, run_dir)
    assert calls["splits"] == 2 and calls["claims"] > 0  # the config read and compared again
    other = parse_experiment({**EXP, "seed": 5})
    setup.prepare_run(other, run_dir)  # nothing trained yet: the directory is reclaimed
    assert setup.load_experiment(run_dir / setup.CONFIG_FILE) == other
    assert calls["splits"] == 3
    setup.prepare_run(exp, run_dir)  # and back: not answered from what was checked before
    assert calls["splits"] == 4
    assert setup.load_experiment(run_dir / setup.CONFIG_FILE) == exp
