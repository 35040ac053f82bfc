"""The federated attackers through a real Flower simulation, run as a campaign.

A passive and an active (isolating + gradient ascent) global attacker and an active local
attacker each attack a small federation; results.json must hold every (experiment, attack)
with finite metrics, and each attacker must have read the view its threat model grants.
"""

import math

import numpy as np
import pytest
import torch
import yaml

from fedattack.campaign import load_campaign, run_campaign
from fedattack.config import parse_experiment
from fedattack.data.splits import load_knowledge, load_membership
from fedattack.experiment import experiment_dataset, initial_model
from fedattack.io import read_json
from fedattack.records import FIGURE_RELATIVE_RESOLUTION
from fedattack.records import rounded as written_as  # a figure as results.json keeps it
from fedattack.results import written
from fedattack.snapshots import SnapshotStore
from fedattack.training import evaluate, set_weights
from tests.fakes import tiny_data

CAMPAIGN = {
    "campaign": "attackers",
    "base": {
        "seed": 5,
        "data": tiny_data(300, 60, 40, num_records=3000, nonmember=800),
        "federation": {"num_participants": 3, "rounds": 3, "record_rounds": [2, 3]},
        "attack": {"attacks": ["whitebox", "threshold-loss"], "epochs": 3, "kernels": 8},
    },
    "experiments": [
        {"name": "global-passive", "attacker": {"kind": "global", "mode": "passive"}},
        {"name": "global-isolating-ga",
         "attacker": {"kind": "global", "mode": "isolating-gradient-ascent", "targets": [1]}},
        {"name": "local-ga",
         "attacker": {"kind": "local", "mode": "gradient-ascent", "participant": 2}},
    ],
}


def test_campaign_of_federated_attackers(tmp_path):
    path = tmp_path / "attackers.yaml"
    path.write_text(yaml.safe_dump(CAMPAIGN))
    records = run_campaign(load_campaign(path), tmp_path / "out", show_progress=False)
    assert written(records) == read_json(tmp_path / "out" / "results.json")
    rows = {(r["experiment"], r["victim"], r["attack"]): r for r in records}
    victims = {"global-passive": ["participant-0", "participant-1", "participant-2",
                                  "mean of 3"],
               "global-isolating-ga": ["participant-1"], "local-ga": ["others-of-2"]}
    for exp, names in victims.items():
        for victim in names:
            for attack in ("whitebox", "threshold-loss"):
                r = rows[(exp, victim, attack)]
                for key in ("attack_accuracy", "auc"):
                    assert math.isfinite(r[key]) and 0 <= r[key] <= 1, (exp, victim, key)
                    low, high = r[f"{key}_ci"]
                    assert low <= r[key] <= high, (exp, victim, key)
                # 40 non-members per victim resolve FPRs of 12.5% and up only
                for key in ("tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
                    assert r[key] is None and r[f"{key}_ci"] is None, (exp, victim, key)
                assert r["global_test_accuracy"] == written_as(read_json(
                    tmp_path / "out" / exp / "run.json")["history"][-1]["test_accuracy"])
    # one strongest attack per experiment (a mean row where there is one), chosen on one half
    # of each victim's 40 + 40 targets and reported on the other
    strongest = {r["experiment"]: r for r in records if r.get("strongest")}
    assert sorted(strongest) == sorted(victims) and sum(bool(r.get("strongest"))
                                                        for r in records) == len(victims)
    assert strongest["global-passive"]["victim"] == "mean of 3"
    for r in records:
        assert r["selection"]["n_nonmembers"] + r["held_out"]["n_nonmembers"] == \
            r["n_nonmembers"]
    mean = rows[("global-passive", "mean of 3", "whitebox")]
    parts = [rows[("global-passive", f"participant-{p}", "whitebox")] for p in range(3)]
    assert mean["auc"] == pytest.approx(np.mean([p["auc"] for p in parts]),
                                        rel=FIGURE_RELATIVE_RESOLUTION)
    # the mean's interval, from the mean of the victims' resamples, is narrower than theirs
    width = mean["auc_ci"][1] - mean["auc_ci"][0]
    assert mean["auc_ci"][0] <= mean["auc"] <= mean["auc_ci"][1]
    assert width < min(p["auc_ci"][1] - p["auc_ci"][0] for p in parts)
    # both active attackers train the passive experiment's federation but for their malice
    passive = rows[("global-passive", "participant-0", "whitebox")]["global_test_accuracy"]
    for exp, victim in (("global-isolating-ga", "participant-1"), ("local-ga", "others-of-2")):
        r = rows[(exp, victim, "whitebox")]
        assert r["passive_twin"] == "global-passive"
        assert r["global_test_accuracy_drop"] == passive - r["global_test_accuracy"]
        assert r["utility_flag"] == (r["global_test_accuracy_drop"] > 0.05)
    assert "passive_twin" not in rows[("global-passive", "participant-0", "whitebox")]
    assert rows[("global-isolating-ga", "participant-1", "whitebox")]["mode"] == \
        "isolating-gradient-ascent"
    assert rows[("local-ga", "others-of-2", "whitebox")]["attacker"] == "local"
    for r in records:  # the final global model's test accuracy, with the victim's if isolated
        assert 0 < r["global_test_accuracy"] <= 1, r["experiment"]
        assert r["global_test_accuracy"] == written_as(read_json(
            tmp_path / "out" / r["experiment"] / "run.json")["history"][-1]["test_accuracy"])
    isolated_row = rows[("global-isolating-ga", "participant-1", "whitebox")]
    run = read_json(tmp_path / "out" / "global-isolating-ga" / "run.json")
    assert isolated_row["isolated_test_accuracy"] == written_as(
        run["isolated"]["1"][-1]["test_accuracy"])
    assert [e["round"] for e in run["isolated"]["1"]] == [1, 2, 3]
    assert "isolated_test_accuracy" not in rows[("global-passive", "participant-0", "whitebox")]

    isolated = SnapshotStore(tmp_path / "out" / "global-isolating-ga" / "snapshots")
    assert [r.round for r in isolated.records(view="global", kind="sent", partition=1)] == [2, 3]
    local = SnapshotStore(tmp_path / "out" / "local-ga" / "snapshots")
    assert sorted(local.views()) == ["global", "local-2"]
    assert [r.round for r in local.view("local-2").records(kind="sent")] == [2, 3]
    figures = tmp_path / "out" / "local-ga" / "figures"
    assert (figures / "gradient_norms_over_rounds.png").stat().st_size > 0

    # The model accuracies of a row are those of the model the attack read, evaluated on the
    # targets: for the isolating attacker, the isolated victim's last upload, not the aggregate.
    run_dir = tmp_path / "out" / "global-isolating-ga"
    exp = parse_experiment(yaml.safe_load((run_dir / "config.yaml").read_text()))
    dataset = experiment_dataset(exp)
    upload = SnapshotStore(run_dir / "snapshots").view("global").records(
        kind="upload", round=3, partition=1)[0]
    model = initial_model(exp, dataset)
    set_weights(model, SnapshotStore(run_dir / "snapshots").view("global").read_arrays(upload))
    knowledge = load_knowledge(run_dir, "participant-1")
    truth = load_membership(run_dir).victim("participant-1")
    members = np.intersect1d(knowledge.targets, truth.target_members)
    row = rows[("global-isolating-ga", "participant-1", "whitebox")]
    cpu = torch.device("cpu")
    assert row["target_train_accuracy"] == written_as(
        evaluate(model, dataset, members, cpu)["accuracy"])
    assert row["target_train_accuracy"] != read_json(run_dir / "run.json")["history"][-1][
        "train_accuracy"]
