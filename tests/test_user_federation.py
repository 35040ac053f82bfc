"""Your model, your data and your attack in a real Flower simulation (issue 26): every Ray worker
imports the user's model factory from the experiment's python_path and reads the user's CSV; the
offline attack runs the user's plug-in beside the built-in attacks. A participant that cannot
import the model fails the run in the first round, with one line naming the module.

Slow (a Ray start each, a minute or more on two loaded cores): `make test` leaves this file out;
.ci/run runs it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.config import parse_experiment
from fedattack.io import read_json
from fedattack.protocol import FederationFailed
from fedattack.runner import preflight
from fedattack.snapshots import SnapshotStore
from tests.user_project import project_for_test

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture
def project(tmp_path, monkeypatch):
    yield from project_for_test(tmp_path, monkeypatch)


def federation(project) -> dict:
    """Three participants of 20 records of the project's CSV (120 records), two rounds."""
    return {
        "name": "my-federation", "seed": 2, "scenario": "federated",
        "python_path": [str(project.root)],
        "data": {"dataset": {"csv": str(project.csv), "label": "diagnosis"},
                 "train_size": 20, "nonmember_size": 50,
                 "knowledge": {"train_members": 6, "train_nonmembers": 6, "test_members": 8,
                               "test_nonmembers": 8}},
        "model": {"factory": project.ref("models", "TabularNet"), "kwargs": {"hidden": 8}},
        "training": {"epochs": 1, "batch_size": 10},
        "federation": {"num_participants": 3, "rounds": 2, "record_rounds": "all"},
        "attacker": {"kind": "global"},
        "attack": {"plugins": [f"{project.package}.attacks"],
                   "attacks": [project.attack, "threshold-loss", "whitebox"],
                   "epochs": 2, "kernels": 8},
    }


def test_your_model_data_and_attack_in_a_flower_simulation(project, tmp_path):
    config = tmp_path / "federation.yaml"
    config.write_text(yaml.safe_dump(federation(project)))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(run_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    record = read_json(run_dir / "run.json")
    assert record["status"] == "finished" and [h["round"] for h in record["history"]] == [0, 1, 2]
    uploads = SnapshotStore(run_dir / "snapshots").view("global")
    first = uploads.records(kind="upload", round=1)
    assert sorted(r.partition for r in first) == [0, 1, 2]  # every worker built the user's model
    shapes = [a.shape for a in uploads.read_arrays(first[0])]
    assert shapes[:4] == [(8, 6), (8,), (2, 1, 3), (2,)]  # TabularNet(hidden=8): embed, mix
    rows = read_json(run_dir / "results.json")
    assert {r["attack"] for r in rows} == {project.attack, "threshold-loss", "whitebox"}
    victims = {r["victim"] for r in rows if r["attack"] == project.attack}
    assert len(victims) >= 1 and all(np.isfinite(r["auc"]) for r in rows)


def test_a_participant_that_cannot_import_the_model_fails_the_run_at_once(project, tmp_path):
    """The driver imported the model (pre-flight); the workers cannot (the package was moved
    away after): the first round fails, saying which module, and no round is recorded."""
    from fedattack.simulation import run_federated

    spec = federation(project)
    spec["attack"] = {"attacks": ["threshold-loss"]}  # the plug-in would fail first
    exp = parse_experiment(spec)
    preflight(exp)
    shutil.move(project.root / project.package, tmp_path / "moved-away")
    with pytest.raises(FederationFailed) as failed:
        run_federated(exp, tmp_path / "run")
    message = str(failed.value)
    assert message.startswith("round 1: a participant cannot load the experiment: "
                              f"model.factory: cannot import module '{project.package}.models'"), \
        message
    assert "\n" not in message
    assert read_json(tmp_path / "run" / "run.json")["status"] == "failed"
