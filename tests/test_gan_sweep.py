"""benchmarks/gan_sweep.py on a hand-made measured run: the budget table read from the first R
rounds of a longer run, and the samples figure from the attacker's recorded snapshots."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedattack.config import Experiment, experiment_yaml
from fedattack.experiment import CONFIG_FILE, RUN_FILE, SNAPSHOT_DIR
from fedattack.io import write_json
from fedattack.reconstruction import ROUNDS_FILE
from fedattack.snapshots import GENERATED_KIND, SnapshotStore, local_view

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gan_sweep.py"
VERDICTS = [False] * 4 + [True, False, True, False] + [True] * 6 + [False, True]  # rounds 3-18


def sweep(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)


def measured_run(run_dir: Path) -> Path:
    """An experiment directory as a finished, measured 18-round GAN run leaves it."""
    exp = Experiment(
        name="no-dp.generator_steps-25", seed=1,
        data={"dataset": "mnist", "train_size": 200, "nonmember_size": 500,
              "partition": "by-class", "classes": {0: [0, 1, 2, 3, 4], 1: [5, 6, 7, 8, 9]},
              "knowledge": {"train_members": 50, "train_nonmembers": 50, "test_members": 50,
                            "test_nonmembers": 50}},
        model={"arch": "cnn-gan"}, federation={"num_participants": 2, "rounds": 18},
        gan={"attacker": 1, "victim_class": 3, "start_round": 3, "generator_steps": 25,
             "eval_samples": 4})
    exp_dir = run_dir / exp.name
    exp_dir.mkdir(parents=True)
    (exp_dir / CONFIG_FILE).write_text(experiment_yaml(exp))
    per_round = [{"round": 3 + i, "success": s, "victim_share": 0.9 if s else 0.1,
                  "none_share": 0.0, "relative_distance": 0.3 if s else 1.2,
                  "target_test_accuracy": i / 100, "epsilon": None}
                 for i, s in enumerate(VERDICTS)]
    write_json(exp_dir / ROUNDS_FILE, per_round)
    write_json(exp_dir / RUN_FILE, {"status": "finished", "history": [
        {"round": r, "elapsed_s": 10.0 * r} for r in range(19)]})
    store = SnapshotStore(exp_dir / SNAPSHOT_DIR)
    for r in (8, 18):
        store.write(local_view(1), GENERATED_KIND, r, {"x": torch.zeros(4, 1, 28, 28)})
    return exp_dir


def test_the_table_reads_each_budget_from_the_first_rounds_of_the_longest_run(tmp_path):
    measured_run(tmp_path / "campaign")
    done = sweep("table", str(tmp_path / "campaign"), "--rounds", "2", "8", "18", "20",
                 "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [r["rounds"] for r in rows] == [8, 18]  # 2: before the attack, 20: never reached
    at8, at18 = rows
    assert at8["attacked_rounds"] == 6 and at8["generator_steps_total"] == 150
    assert (at8["window_successes"], at8["window_rounds"]) == (1, 6)  # rounds 3-8
    assert at8["first_success_round"] == 7 and at8["time_s"] == 80.0
    assert at8["test_accuracy"] == 0.05 and at8["seed"] == 1 and at8["dataset"] == "mnist"
    assert (at18["window_successes"], at18["window_rounds"]) == (8, 10)  # rounds 9-18
    assert at18["window_success_share"] == 0.8 and at18["successes"] == 9
    assert at18["window_ci_low"] == pytest.approx(0.4439, abs=1e-4)
    assert at18["window_ci_high"] == pytest.approx(0.9748, abs=1e-4)
    assert at18["dp"] is False and at18["time_s"] == 180.0
    with open(tmp_path / "out" / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [(t["rounds"], t["window_successes"]) for t in table] == [("8", "1"), ("18", "8")]


def test_the_table_refuses_a_directory_without_a_measured_run(tmp_path):
    done = sweep("table", str(tmp_path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "no measured GAN experiment" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_samples_figure_is_drawn_from_the_recorded_rounds(tmp_path):
    exp_dir = measured_run(tmp_path)
    out = tmp_path / "figure" / "samples.png"
    done = sweep("samples", f"first={exp_dir}:8", f"last={exp_dir}:18", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    missing = sweep("samples", f"x={exp_dir}:9", "--out", str(tmp_path / "none.png"))
    assert missing.returncode != 0 and not (tmp_path / "none.png").exists()


def test_the_success_figure_is_drawn_up_to_the_given_round(tmp_path):
    exp_dir = measured_run(tmp_path)
    out = tmp_path / "success.png"
    done = sweep("success", f"steps-25={exp_dir}:12", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0
    early = sweep("success", f"x={exp_dir}:2", "--out", str(tmp_path / "early.png"))
    assert early.returncode == 2 and "no measured round up to 2" in early.stderr
