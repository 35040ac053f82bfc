"""The white-box attack end to end on a stand-alone model that overfits its training set.

A Purchase FC model trained for 20 epochs on 400 stand-in records fits them exactly and
generalises poorly, so members and non-members are clearly separable; the attack of Nasr et al.
(last layer's gradients, output, loss, label), trained on 300 + 300 known records, must score
the 100 + 100 targets well above chance (measured: AUC 0.94, accuracy 0.89).
"""

import numpy as np

from fedattack.cli import report_run
from fedattack.config import Experiment
from fedattack.io import read_json
from fedattack.reporting import FIGURES, RESULTS_JSON
from fedattack.runner import run_experiment


def overfit() -> Experiment:
    return Experiment(
        name="overfit", seed=0, scenario="standalone", device="cpu",
        data={"dataset": "purchase100-synth", "train_size": 400, "nonmember_size": 800,
              "knowledge": {"train_members": 300, "train_nonmembers": 300, "test_members": 100,
                            "test_nonmembers": 100}},
        model={"arch": "purchase-fc"},
        training={"epochs": 20},
        attack={"attacks": ["whitebox"], "epochs": 20, "kernels": 16},
    )


def whitebox_row(exp: Experiment, run_dir) -> dict:
    _, results = run_experiment(exp, run_dir, show_progress=False)
    (row,) = results
    assert read_json(run_dir / RESULTS_JSON) == [row.to_dict()]
    assert row["attack"] == "whitebox" and row["n_members"] == row["n_nonmembers"] == 100
    return row


def test_whitebox_attack_is_well_above_chance_on_an_overfit_model(tmp_path):
    row = whitebox_row(overfit(), tmp_path / "trained")
    assert row["target_train_accuracy"] > 0.95 and row["target_test_accuracy"] < 0.7
    assert row["auc"] > 0.8 and row["attack_accuracy"] > 0.7
    for figure in ("roc.png", "gradient_norms.png", "per_class_accuracy.png",
                   "training-whitebox.png"):
        assert (tmp_path / "trained" / FIGURES / figure).stat().st_size > 0
    # the training record: per-epoch history, best validation AUC against the loss threshold's
    history = row["history"]
    assert len(history) == row["epochs_trained"] <= 20
    assert {"train_loss", "train_auc", "val_loss", "val_auc"} <= set(history[0])
    assert row["val_auc"] == max(h["val_auc"] for h in history)
    assert history[row["best_epoch"] - 1]["val_auc"] == row["val_auc"]
    assert 0.5 < row["threshold_loss_val_auc"] <= 1
    assert row["undertrained"] is (row["val_auc"] < row["threshold_loss_val_auc"])
    scores = np.load(tmp_path / "trained" / "attacks" / "whitebox-scores.npy")
    assert scores.dtype == np.float64 and len(np.unique(scores)) >= 0.95 * len(scores)


def test_undertrained_attacks_get_a_warning_line(tmp_path, capsys):
    rows = [{"experiment": "e", "attack": "blackbox", "victim": "all", "undertrained": True,
             "val_auc": 0.52, "threshold_loss_val_auc": 0.61},
            {"experiment": "e", "attack": "whitebox", "victim": "all", "undertrained": False,
             "val_auc": 0.7, "threshold_loss_val_auc": 0.61},
            {"experiment": "e", "attack": "threshold-loss", "victim": "all"}]
    report_run(overfit(), tmp_path, {"history": [{"train_accuracy": 1.0,
                                                  "test_accuracy": 0.5}]}, rows)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: e blackbox (all): undertrained, validation AUC 0.520 below the "
                   "loss threshold's 0.610 on the same held-out known records"]



def test_every_learnt_attack_reports_its_training(tmp_path):
    """The shadow-model and white-box-outputs attacks train the same network: each row carries
    its history and the loss threshold's validation AUC (for the shadow attack, on the shadow
    models' own held-out records)."""
    exp = overfit().model_copy(update={
        "data": overfit().data.model_copy(update={"shadow_size": 200}),
        "training": overfit().training.model_copy(update={"epochs": 5}),
        "attack": overfit().attack.model_copy(update={
            "attacks": ["shadow", "whitebox-outputs"], "epochs": 3}),
    })
    _, results = run_experiment(exp, tmp_path / "run", show_progress=False)
    assert [r["attack"] for r in results] == ["shadow", "whitebox-outputs"]
    for row in results:
        assert 1 <= row["epochs_trained"] == len(row["history"]) <= 3
        assert 0 <= row["threshold_loss_val_auc"] <= 1
        assert row["undertrained"] is (row["val_auc"] < row["threshold_loss_val_auc"])
        assert (tmp_path / "run" / FIGURES / f"training-{row['attack']}.png").exists()
