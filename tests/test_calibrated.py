"""The calibrated white-box attack: scores by hand on a frozen case, references that never saw a
target, and a run end to end."""

import math

import numpy as np
import pytest
import torch

from fedattack import attack_registry as registry
from fedattack.attacks.calibrated import (
    calibrated_scores,
    orientation,
    record_features,
    standardised,
)
from fedattack.attacks.references import reference_plan
from fedattack.config import Experiment
from fedattack.data import Knowledge
from fedattack.models.fc import FCNet
from tests.fakes import ArrayDataset, planning_input, tiny_data, tiny_experiment


def minus_log_sf(z: float) -> float:
    """-log Pr[N(0,1) > z], by hand from erfc."""
    return -math.log(0.5 * math.erfc(z / math.sqrt(2)))


# two records, three references, two features (loss: members lower; logit confidence: higher)
TARGET = np.array([[0.5, 3.0],
                   [2.0, 0.0]])
REFS = np.array([[[1.0, 1.0], [2.0, 2.0], [3.0, 0.0]],    # loss mu 2, var 2/3; conf mu 1, 2/3
                 [[2.0, 0.0], [2.0, 1.0], [2.0, -1.0]]])  # loss mu 2, var 0;  conf mu 0, 2/3
SIGNS = orientation(["loss", "logit_confidence"])


def test_orientation_of_the_features():
    assert orientation(["loss", "logit_confidence", "log_grad_norm:-1",
                        "log_grad_norm:fc.0"]).tolist() == [-1, 1, -1, -1]


def test_standardised_per_example_and_global_by_hand():
    s = math.sqrt(2 / 3)
    per = standardised(TARGET, REFS, "per-example")
    assert per[0] == pytest.approx([(0.5 - 2) / s, (3 - 1) / s])
    assert per[1, 0] == 0.0  # identical references: sd floored, the target at their mean
    assert per[1, 1] == pytest.approx(0.0)
    glob = standardised(TARGET, REFS, "global")
    loss_sd = math.sqrt((2 / 3 + 0) / 2)  # within-record variances pooled over the records
    conf_sd = math.sqrt((2 / 3 + 2 / 3) / 2)
    assert glob[:, 0] == pytest.approx([-1.5 / loss_sd, 0.0])
    assert glob[:, 1] == pytest.approx([2 / conf_sd, 0.0])


def test_sum_and_fisher_combinations_by_hand():
    s = math.sqrt(2 / 3)
    z0 = [1.5 / s, 2 / s]  # record 0, oriented: lower loss and higher confidence say member
    total = calibrated_scores(TARGET, REFS, SIGNS, "per-example", "sum")
    assert total.dtype == np.float64
    assert total == pytest.approx([sum(z0) / 2, 0.0])
    fisher = calibrated_scores(TARGET, REFS, SIGNS, "per-example", "fisher")
    assert fisher == pytest.approx([minus_log_sf(z0[0]) + minus_log_sf(z0[1]),
                                    2 * minus_log_sf(0.0)])


def test_rounds_are_summed():
    two = calibrated_scores(np.stack([TARGET, TARGET]), np.stack([REFS, REFS]), SIGNS,
                            "per-example", "sum")
    one = calibrated_scores(TARGET, REFS, SIGNS, "per-example", "sum")
    assert two == pytest.approx(2 * one)


def test_bad_shapes_and_combines_are_refused():
    with pytest.raises(ValueError, match="disagree"):
        calibrated_scores(TARGET, REFS, [1.0], "global")
    with pytest.raises(ValueError, match="unknown combine"):
        calibrated_scores(TARGET, REFS, SIGNS, "global", "max")
    with pytest.raises(ValueError, match="at least 2"):
        standardised(TARGET, REFS[:, :1], "per-example")


def test_record_features_equal_autograd_per_record():
    torch.manual_seed(0)
    models = [FCNet(6, 3, "tanh", hidden=(5,)) for _ in range(2)]
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.normal(size=(7, 6)).astype(np.float32), rng.integers(0, 3, 7),
                        num_classes=3, name="tiny")
    idx = np.array([0, 3, 6])
    values, names = record_features(models, [0, -1], data, idx, "cpu", 64.0)
    assert names == ["loss", "logit_confidence", "log_grad_norm:0", "log_grad_norm:-1"]
    assert values.shape == (3, 2, 4) and values.dtype == np.float64
    for m, model in enumerate(models):
        layers = [mod for mod in model.modules() if isinstance(mod, torch.nn.Linear)]
        for i, n in enumerate(idx):
            x, y = data.batch(np.array([n]))
            model.zero_grad()
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits, y)
            loss.backward()
            p = torch.softmax(logits.detach().double(), -1)[0, int(y)]
            assert values[i, m, 0] == pytest.approx(loss.item(), rel=1e-5)
            assert values[i, m, 1] == pytest.approx(float(torch.log(p / (1 - p))), rel=1e-5)
            for f, layer in ((2, layers[0]), (3, layers[-1])):
                norm = math.sqrt(float(layer.weight.grad.square().sum()
                                       + layer.bias.grad.square().sum()))
                assert values[i, m, f] == pytest.approx(math.log(norm), abs=1e-5)


def test_offline_calibration_never_trains_on_a_target():
    """The references of calibrated-whitebox are the offline set (the same cache entry as
    lira-offline's): no target, member or not, is in any reference's training indices."""
    rng = np.random.default_rng(0)
    order = rng.permutation(1000)
    know = Knowledge("all", known_members=np.sort(order[:50]),
                     known_nonmembers=np.sort(order[50:100]), shadow=np.sort(order[100:160]),
                     targets=np.sort(order[160:260]))
    exp = experiment(100, 30, 30, 1, {"models": 4})
    data = ArrayDataset(np.zeros((10, 600), np.uint8), np.zeros(10, np.int64), num_classes=100,
                        name="fake")
    plan = reference_plan("calibrated-whitebox", planning_input(exp, know, data))
    population = np.concatenate([know.shadow, know.known_members, know.known_nonmembers])
    for s in plan.train_sets:
        assert not np.isin(s, know.targets).any()
        assert np.isin(s, population).all()
    assert plan.key() == reference_plan("lira-offline", planning_input(exp, know, data)).key()


def test_registered_with_its_knowledge_and_where_it_runs():
    offline = registry.get("calibrated-whitebox")
    uploads = registry.get("calibrated-whitebox-uploads")
    assert offline.knowledge == "reference" and uploads.knowledge == "observed"
    assert uploads.scenarios == ("federated",) and uploads.attackers == ("global",)
    base = {"name": "f", "scenario": "federated",
            "data": {"dataset": "purchase100-synth", "train_size": 50},
            "federation": {"num_participants": 2}, "attacker": {"kind": "global"},
            "attack": {"attacks": ["calibrated-whitebox-uploads"]}}
    with pytest.raises(ValueError, match="the calibrated-whitebox-uploads attack needs at "
                                         "least 2 participants besides the victim"):
        Experiment(**base)
    local = Experiment(**{**base, "federation": {"num_participants": 4},
                          "attacker": {"kind": "local"},
                          "attack": {"attacks": ["calibrated-whitebox"]}})
    assert "for the global attacker, not the local one" in uploads.refusal(local)
    assert offline.refusal(local) is None


# --- end to end, stand-alone (a federated run is in tests/test_federated_attacks.py's pattern,
# slow below) --------------------------------------------------------------------------------


def experiment(train: int, known: int, targets: int, epochs: int, references: dict,
               attacks=("calibrated-whitebox", "rmia-offline", "threshold-loss"),
               **params) -> Experiment:
    return Experiment(**tiny_experiment(
        "calibrated", "standalone", data=tiny_data(train, known, targets, shadow=train),
        device="cpu", training={"epochs": epochs},
        attack={"attacks": list(attacks), "references": references, **params}))


def test_calibrated_whitebox_runs_end_to_end_and_shares_the_offline_references(tmp_path):
    from fedattack.runner import run_experiment

    exp = experiment(100, 30, 30, 3, {"models": 2, "a": 0.5},
                     **{"calibrated-whitebox": {"gradients": [-2, -1]}})
    _, results = run_experiment(exp, tmp_path / "run", show_progress=False)
    rows = {r["attack"]: r for r in results}
    row = rows["calibrated-whitebox"]
    assert row["knowledge"] == "reference"
    assert row["n_members"] == row["n_nonmembers"] == 30
    assert 0 <= row["auc"] <= 1 and row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1]
    assert row["features"] == ("loss+logit_confidence+log_grad_norm:-2+log_grad_norm:-1 "
                               "vs reference models")
    assert len(list((tmp_path / "run" / "references").iterdir())) == 1  # RMIA's set, reused


CAMPAIGN = {
    "campaign": "calibrated",
    "base": {
        "seed": 3,
        "data": tiny_data(300, 60, 100, num_records=3000, nonmember=800),
        "federation": {"num_participants": 3, "rounds": 3, "record_rounds": [2, 3]},
        "attacker": {"kind": "global", "mode": "passive", "targets": [0, 1]},
        "attack": {"attacks": ["calibrated-whitebox-uploads", "calibrated-whitebox",
                               "threshold-loss"],
                   "references": {"models": 2},
                   "calibrated-whitebox-uploads": {"combine": "fisher"}},
    },
    "experiments": [{"name": "global-passive"}],
}


@pytest.mark.slow
def test_global_passive_attacker_runs_the_calibrated_attacks(tmp_path):
    import yaml

    from fedattack.campaign import load_campaign, run_campaign

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CAMPAIGN))
    records = run_campaign(load_campaign(path), tmp_path / "out", show_progress=False)
    rows = {(r["victim"], r["attack"]): r for r in records}
    for victim in ("participant-0", "participant-1", "mean of 2"):
        r = rows[(victim, "calibrated-whitebox-uploads")]
        assert r["knowledge"] == "observed" and r["snapshots"] == "round-2,round-3"
        assert math.isfinite(r["auc"]) and r["tpr_at_1pct_fpr"] is None  # 100 non-members
        assert rows[(victim, "calibrated-whitebox")]["knowledge"] == "reference"
    assert rows[("mean of 2", "calibrated-whitebox-uploads")]["auc"] > 0.55
