"""LiRA and RMIA end to end through the experiment runner, on stand-alone targets."""

import pytest

from fedattack.config import Experiment
from fedattack.runner import run_experiment
from tests.fakes import tiny_data, tiny_experiment

REFERENCE_ATTACKS = ["lira-offline", "rmia-offline", "lira-online", "rmia-online"]


def experiment(train: int, known: int, targets: int, epochs: int, references: dict) -> Experiment:
    return Experiment(**tiny_experiment(
        "refs", "standalone", data=tiny_data(train, known, targets, shadow=train), device="cpu",
        training={"epochs": epochs}, attack={"attacks": REFERENCE_ATTACKS,
                                             "references": references}))


def run(exp: Experiment, run_dir) -> dict:
    _, results = run_experiment(exp, run_dir, show_progress=False)
    rows = {r["attack"]: r for r in results}
    assert list(rows) == REFERENCE_ATTACKS
    assert all(r["knowledge"] == "reference" for r in rows.values())
    # the offline attacks share one reference set, the online ones another: two cache entries
    assert len(list((run_dir / "references").iterdir())) == 2
    return rows


def test_reference_attacks_run_and_share_their_cached_references(tmp_path):
    rows = run(experiment(100, 30, 30, 3, {"models": 2, "a": 0.5}), tmp_path / "run")
    assert all(r["n_members"] == r["n_nonmembers"] == 30 for r in rows.values())


@pytest.mark.slow
def test_reference_attacks_are_well_above_chance_on_an_overfit_model(tmp_path):
    """400 records, 10 epochs: the target fits its training set; measured AUC 0.86 to 0.92."""
    rows = run(experiment(400, 100, 100, 10, {"models": 4}), tmp_path / "run")
    for name, row in rows.items():
        assert row["auc"] > 0.75, (name, row["auc"])
