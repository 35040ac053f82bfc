"""The GAN attack end to end on MNIST, through a real Flower simulation on Ray.

The victim (participant 0) alone owns digits 0-4, the attacker (participant 1) owns 5-9 and
reconstructs the victim's 3s. Without DP, the generated samples must move towards the victim's
class: the independent classifier assigns a clearly larger share of them to it at the last round
than at the first attacked round, and their kernel distance to the victim's digits (relative to
the nearest other digit) falls. The first attacked round (an untrained generator) must fail the
success rule. The fast variant runs in `make test`: after 3 attacked rounds its samples are
scratches that the classifier alone calls 3s (share 1.0) but the distance does not (0.61 > 0.5),
so it checks the move, not success; the slow ones run 8 rounds, without and with DP.
"""

import pytest

from fedattack.config import Experiment
from fedattack.io import read_json
from fedattack.reconstruction import ROUNDS_FILE, SUCCESS_FIGURE, window_success
from fedattack.reporting import FIGURES, RESULTS_JSON
from fedattack.runner import run_experiment

SPLIT = {"partition": "by-class", "classes": {0: [0, 1, 2, 3, 4], 1: [5, 6, 7, 8, 9]}}
KNOWLEDGE = {"train_members": 50, "train_nonmembers": 50, "test_members": 50,
             "test_nonmembers": 50}


def mnist_gan(name: str, train_size: int, rounds: int, local_epochs: int, lr: float,
              start_round: int, steps: int, generator_lr: float, optimizer: str = "adam",
              **extra) -> Experiment:
    return Experiment(
        name=name, seed=0,
        data={"dataset": "mnist", "train_size": train_size, "nonmember_size": 2000,
              "knowledge": KNOWLEDGE, **SPLIT},
        model={"arch": "cnn-gan"},
        training={"optimizer": optimizer, "lr": lr, "batch_size": 64},
        federation={"num_participants": 2, "rounds": rounds, "local_epochs": local_epochs,
                    "record_rounds": "none"},
        gan={"attacker": 1, "victim_class": 3, "start_round": start_round,
             "generator_steps": steps, "generator_lr": generator_lr, "samples_per_round": 128,
             "eval_samples": 32, "classifier_epochs": 2},
        **extra,
    )


def run_and_check_outputs(exp: Experiment, run_dir) -> dict:
    """Run the experiment; check what it writes; return its results.json record."""
    record, results = run_experiment(exp, run_dir, show_progress=False)
    assert record["status"] == "finished"
    (summary,) = results
    assert read_json(run_dir / RESULTS_JSON) == results
    rounds = list(range(exp.gan.start_round, exp.federation.rounds + 1))
    assert [r["round"] for r in summary["per_round"]] == rounds
    assert read_json(run_dir / ROUNDS_FILE) == summary["per_round"]
    for r in rounds:
        assert (run_dir / FIGURES / "gan" / f"round-{r:04d}.png").stat().st_size > 0
    assert (run_dir / FIGURES / "gan" / SUCCESS_FIGURE).stat().st_size > 0
    assert summary.items() >= window_success(summary["per_round"]).items()
    assert summary["window_rounds"] == min(10, len(rounds))
    assert summary["attack"] == "gan" and summary["classifier_accuracy"] > 0.8
    assert 0 < summary["nn_distance_real"] < summary["per_round"][0]["nn_distance_train"]
    return summary


def assert_attack_moved(summary: dict) -> None:
    assert summary["measure_resolved"] and abs(summary["relative_distance_real"]) < 0.5
    first = summary["per_round"][0]
    assert first["success"] is False and first["relative_distance"] > 1
    assert summary["victim_share"] >= summary["victim_share_first"] + 0.5
    assert summary["victim_confidence"] > summary["victim_confidence_first"]
    assert summary["relative_distance"] < 0.7 * first["relative_distance"]
    assert summary["nn_distance_train"] < first["nn_distance_train"]  # nearer real victim digits
    assert summary["success"] in (True, False)
    successes = [r["round"] for r in summary["per_round"] if r["success"]]
    assert summary["first_success_round"] == (successes[0] if successes else None)


def test_gan_attack_moves_towards_the_victims_class_fast(tmp_path):
    exp = mnist_gan("gan-e2e-fast", train_size=500, rounds=4, local_epochs=2, lr=2e-3,
                    start_round=2, steps=80, generator_lr=1e-3)
    summary = run_and_check_outputs(exp, tmp_path)
    assert_attack_moved(summary)
    assert summary["epsilon"] is None


SLOW = {"train_size": 1000, "rounds": 8, "local_epochs": 1, "lr": 1e-3, "start_round": 3,
        "steps": 100, "generator_lr": 2e-4}
DP = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "delta": 1e-5}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gan_attack_succeeds_over_eight_rounds(tmp_path):
    summary = run_and_check_outputs(mnist_gan("gan-e2e", **SLOW), tmp_path)
    assert_attack_moved(summary)
    assert summary["victim_share"] == 1.0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gan_attack_survives_dp_sgd_of_the_victim(tmp_path):
    """Hitaj et al.'s point: record-level DP does not protect a class. With DP-SGD (sigma 1,
    clip 1) and plain SGD with momentum (under which DP training still learns; with Adam at
    1e-3 the DP victim's digits are barely learnt and the attack fails with them), the victim's
    class is reconstructed all the same, while epsilon accumulates round after round."""
    exp = mnist_gan("gan-e2e-dp", **{**SLOW, "lr": 0.05}, optimizer="sgd", privacy=DP)
    summary = run_and_check_outputs(exp, tmp_path)
    assert_attack_moved(summary)
    spent = [r["epsilon"] for r in summary["per_round"]]
    assert all(0 < a < b for a, b in zip(spent, spent[1:], strict=False))
    assert summary["epsilon"] == spent[-1] and summary["noise_multiplier"] == 1.0
