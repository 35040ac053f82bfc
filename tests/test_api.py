"""The Python API (fedattack.api, exported at the package's top level): experiments built and
merged, bad input refused in one line, a run and its attack stage read back as typed objects, and
the example under examples/ run end to end (a real Flower simulation of your own model and CSV)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fedattack
from fedattack.config import ConfigError, Experiment
from fedattack.results import ResultRow
from tests.fakes import tiny_data

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_package_imports_neither_torch_nor_flower():
    code = ("import sys, fedattack; fedattack.build_experiment; "
            "print(sorted(m for m in ('torch', 'flwr', 'ray') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_every_exported_name_is_documented():
    for name in fedattack.__all__:
        assert getattr(fedattack, name).__doc__, name
    with pytest.raises(AttributeError):
        fedattack.no_such_name  # noqa: B018


def test_build_experiment_merges_nested_fields_over_a_yaml_or_an_experiment():
    exp = fedattack.build_experiment(ROOT / "experiments" / "quickstart.yaml",
                                     federation={"rounds": 30}, name="short")
    base = fedattack.load(ROOT / "experiments" / "quickstart.yaml")
    assert isinstance(exp, Experiment) and exp.name == "short"
    assert exp.federation.rounds == 30
    assert exp.federation.num_participants == base.federation.num_participants  # merged, kept
    again = fedattack.build_experiment(exp, seed=7)
    assert again.seed == 7 and again.federation.rounds == 30 and again.name == "short"
    mapping = fedattack.build_experiment({"name": "m", "data": {"dataset": "purchase100-synth"}})
    assert mapping.data.dataset == "purchase100-synth"


def test_bad_input_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"federation\.roundz: unknown key; did you mean "
                                          r"'rounds'") as err:
        fedattack.build_experiment(name="x", federation={"roundz": 2})
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="a YAML path, a mapping or an Experiment"):
        fedattack.build_experiment(42)
    with pytest.raises(ConfigError, match="not a fedattack run directory"):
        fedattack.open_run(tmp_path)
    with pytest.raises(ConfigError, match="not a fedattack run directory"):
        fedattack.attack(tmp_path)


def tiny_standalone() -> Experiment:
    return fedattack.build_experiment(
        name="api", seed=3, scenario="standalone",
        data=tiny_data(200, 40, 40, num_records=2000, nonmember=600),
        training={"epochs": 8},
        attack={"attacks": ["threshold-loss", "whitebox"], "epochs": 3, "kernels": 8})


def test_run_then_attack_and_read_back_as_typed_results(tmp_path):
    exp = tiny_standalone()
    fedattack.check(exp)
    run = fedattack.run(exp, tmp_path / "run")
    assert isinstance(run, fedattack.Run) and run.status == "finished"
    assert run.experiment == exp and len(run.history) == 8
    assert [r.attack for r in run.results] == ["threshold-loss", "whitebox"]
    assert all(isinstance(r, ResultRow) for r in run.results)
    assert run.victims == ["all"]
    row = run.row("threshold-loss")
    assert 0 <= row.figures.auc_ci[0] <= row.figures.auc <= row.figures.auc_ci[1] <= 1
    assert len(run.strongest()) == 1 and run.strongest()[0].strongest_chosen_on
    # the ROC recomputed from the saved scores and the ground truth gives the row's AUC
    roc = run.roc("whitebox")
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(run.row("whitebox").figures.auc,
                                                           abs=1e-6)
    targets, labels = run.targets()
    assert len(targets) == len(labels) == len(run.scores("whitebox")) == 80
    assert labels.sum() == 40
    assert {"roc", "training-whitebox"} <= set(run.figures)
    assert all(p.is_file() for p in run.figures.values())
    assert "| threshold-loss" in run.table() or "threshold-loss" in run.table()
    with pytest.raises(KeyError, match="no result of attack 'lira-offline'"):
        run.row("lira-offline")
    # the attack stage alone on the recorded run reads the finished results back unchanged
    again = fedattack.attack(tmp_path / "run")
    assert [r.to_dict() for r in again.results] == [r.to_dict() for r in run.results]
    # a rerun of the whole experiment reads it back too
    assert fedattack.run(exp, tmp_path / "run").results == run.results


@pytest.mark.slow  # a real Flower simulation of 5 rounds, ~2-3 min on two cores: run by .ci/run
def test_the_example_script_audits_its_own_model_and_csv(tmp_path):
    """examples/audit_your_model.py, as a user runs it: a real Flower simulation of the user's
    module and CSV, attacked, with the figures printed with their intervals."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "audit_your_model.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=1500,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "global model after round 5: test accuracy" in out
    assert "threshold-loss on participant-1: AUC" in out
    assert "whitebox on participant-1: AUC" in out
    assert "strongest: " in out and "white-box ROC:" in out
    run = fedattack.open_run(tmp_path / "run")
    assert run.status == "finished" and run.victims == ["participant-1"]
    assert all(np.isfinite(r.figures.auc) for r in run.results)
    assert run.experiment.model.factory == "mymodels:TabularNet"
