"""Campaigns: expansion, validation, results, and resuming after the process is killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fedattack.campaign import (
    CAMPAIGN_FILE,
    PAPER_KEY,
    deep_merge,
    expanded_name,
    load_campaign,
    run_campaign,
    selected,
)
from fedattack.cli import app, load_config
from fedattack.config import ConfigError
from fedattack.report.html import REPORT_HTML, RISK_CSV
from fedattack.results import written

REPO = Path(__file__).resolve().parents[1]
TIMING_FIELDS = ("attack_time_s",)

# Two stand-alone experiments (seeds 0 and 1) small enough to train and attack in seconds.
TINY = """\
campaign: tiny
description: two seeds of a tiny stand-alone run
base:
  scenario: standalone
  device: cpu
  data:
    dataset: purchase100-synth
    num_records: 600
    train_size: 100
    nonmember_size: 200
    knowledge: {train_members: 50, train_nonmembers: 50, test_members: 50, test_nonmembers: 50}
  training: {epochs: 4}
  attack: {attacks: [whitebox, threshold-loss], epochs: 2, kernels: 8}
experiments:
  - name: fc
    paper: {whitebox: 0.734}
sweep:
  seed: [0, 1]
"""
FIRST, SECOND = "fc.seed-0", "fc.seed-1"


def write(tmp_path: Path, text: str, name: str = "campaign.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def campaign_text(**fields) -> str:
    """A minimal valid campaign with some top-level fields replaced."""
    data = {
        "campaign": "c",
        "base": {"scenario": "standalone", "attack": {"attacks": ["whitebox"]}},
        "experiments": [{"name": "a"}, {"name": "b", "training": {"epochs": 3}}],
        **fields,
    }
    return yaml.safe_dump(data, sort_keys=False)


# --- expansion -------------------------------------------------------------------------------


def test_sweep_is_a_cartesian_product_named_by_leaf(tmp_path):
    sweep = {"federation.num_participants": [2, 3], "seed": [0, 1]}
    plan = load_campaign(write(tmp_path, campaign_text(
        base={"scenario": "federated"}, sweep=sweep)))
    names = [item.experiment.name for item in plan.items]
    assert names == [
        "a.num_participants-2.seed-0", "a.num_participants-2.seed-1",
        "a.num_participants-3.seed-0", "a.num_participants-3.seed-1",
        "b.num_participants-2.seed-0", "b.num_participants-2.seed-1",
        "b.num_participants-3.seed-0", "b.num_participants-3.seed-1",
    ]
    last = plan.items[-1]
    assert last.experiment.federation.num_participants == 3
    assert last.experiment.seed == 1
    assert last.experiment.training.epochs == 3
    assert last.swept == {"federation.num_participants": 3, "seed": 1}


def test_repeats_run_each_experiment_with_consecutive_seeds(tmp_path):
    plan = load_campaign(write(tmp_path, campaign_text(
        base={"scenario": "standalone", "seed": 5}, repeats=3,
        sweep={"training.epochs": [1, 2]})))
    names = [item.experiment.name for item in plan.items]
    assert names[:3] == ["a.epochs-1.seed-5", "a.epochs-1.seed-6", "a.epochs-1.seed-7"]
    assert len(names) == 2 * 2 * 3
    assert [item.experiment.seed for item in plan.items[:3]] == [5, 6, 7]
    assert [item.group for item in plan.items[:4]] == ["a.epochs-1"] * 3 + ["a.epochs-2"]
    assert plan.items[0].swept == {"training.epochs": 1, "seed": 5}


def fake_run(name: str, attack: str, auc: float, **extra) -> dict:
    return {"experiment": name, "attacker": "standalone", "mode": "passive", "victim": "all",
            "attack": attack, "features": "loss", "auc": auc, "attack_accuracy": auc - 0.1,
            "tpr_at_1pct_fpr": None, "n_nonmembers": 100, "min_resolvable_fpr": 0.05, **extra}


def test_over_seeds_gives_mean_std_and_range_per_attack_row(tmp_path):
    from fedattack.campaign import campaign_markdown, over_seeds

    plan = load_campaign(write(tmp_path, campaign_text(repeats=3)))
    aucs = [0.6, 0.7, 0.8]
    records = [fake_run(f"{e}.seed-{k}", "whitebox", auc + (e == "b") * 0.01)
               for e in ("a", "b") for k, auc in enumerate(aucs)]
    rows = over_seeds(plan, records)
    assert [(r["experiment"], r["seeds"], r["repeats"]) for r in rows] == [
        ("a", [0, 1, 2], 3), ("b", [0, 1, 2], 3)]
    auc = rows[0]["auc"]
    assert auc["mean"] == pytest.approx(0.7)
    assert auc["std"] == pytest.approx(0.1)  # sample standard deviation of .6, .7, .8
    assert (auc["min"], auc["max"]) == (0.6, 0.8)
    assert rows[1]["auc"]["mean"] == pytest.approx(0.71)
    assert rows[0]["tpr_at_1pct_fpr"] is None  # unresolved in every run
    # a campaign still running: only the seeds that have run
    partial = over_seeds(plan, records[:2])
    assert [(r["experiment"], r["seeds"]) for r in partial] == [("a", [0, 1])]
    text = campaign_markdown(records, rows)
    assert "| a | whitebox | all | 0,1,2 | 0.600 ± 0.100 [0.500, 0.700] |" in text
    assert "n/a (<5/100)" in text.split("over seeds")[1]


def test_without_sweep_each_experiment_runs_once(tmp_path):
    plan = load_campaign(write(tmp_path, campaign_text()))
    assert [item.experiment.name for item in plan.items] == ["a", "b"]
    assert all(item.swept == {} for item in plan.items)


def test_list_values_make_valid_names():
    name = expanded_name("a", {"attack.features.gradients": [-1, "fc.3"], "training.lr": 1e-3})
    assert name == "a.gradients--1_fc.3.lr-0.001"


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    base = {"data": {"dataset": "purchase100-synth", "train_size": 1000}, "seed": 0,
            "attack": {"attacks": ["whitebox", "blackbox"]}}
    entry = {"data": {"train_size": 200, "nonmember_size": 300}, "attack": {"attacks": ["shadow"]}}
    merged = deep_merge(base, entry)
    assert merged == {"data": {"dataset": "purchase100-synth", "train_size": 200,
                               "nonmember_size": 300},
                      "seed": 0, "attack": {"attacks": ["shadow"]}}
    assert base["data"]["train_size"] == 1000  # the base is not modified


def test_entry_and_sweep_are_merged_onto_base(tmp_path):
    text = campaign_text(
        base={"scenario": "standalone", "data": {"train_size": 500, "nonmember_size": 700},
              "attack": {"attacks": ["whitebox"], "epochs": 7}},
        experiments=[{"name": "a", "data": {"train_size": 300}, "paper": {"whitebox": 0.7}}],
        sweep={"data.knowledge.train_members": [10]},
    )
    (item,) = load_campaign(write(tmp_path, text)).items
    exp = item.experiment
    assert (exp.data.train_size, exp.data.nonmember_size) == (300, 700)
    assert exp.data.knowledge.train_members == 10
    assert exp.attack.epochs == 7
    assert item.paper == {"whitebox": 0.7}


# --- validation ------------------------------------------------------------------------------

BAD_CAMPAIGNS = {
    "duplicate_names": (
        {"experiments": [{"name": "a"}, {"name": "a"}]},
        "experiments: duplicate experiment names ['a']",
    ),
    "unknown_sweep_key": (
        {"sweep": {"federation.num_participant": [2]}},
        "sweep: unknown experiment key 'federation.num_participant'",
    ),
    "sweep_below_a_leaf": ({"sweep": {"seed.value": [2]}}, "unknown experiment key 'seed.value'"),
    "sweep_over_name": ({"sweep": {"name": ["x"]}}, "unknown experiment key 'name'"),
    "empty_sweep_values": ({"sweep": {"seed": []}}, "sweep: 'seed' sweeps over no values"),
    "empty_sweep": ({"sweep": {}}, "sweep: sweeps over no keys"),
    "no_experiments": ({"experiments": []}, "experiments: List should have at least 1 item"),
    "unnamed_entry": ({"experiments": [{"seed": 1}]}, "experiments.0.name: Field required"),
    "bad_entry_name": ({"experiments": [{"name": "a b"}]},
                       "experiments.0.name: 'a b' is not a plain folder name"),
    "name_in_base": ({"base": {"name": "x"}}, "base: an experiment's name comes from its entry"),
    "percent_not_fraction": (
        {"experiments": [{"name": "a", "paper": {"whitebox": 74.6}}]},
        "experiments.0.paper.whitebox: Input should be less than or equal to 1",
    ),
    "paper_unknown_attack": (
        {"experiments": [{"name": "a", "paper": {"greybox": 0.7}}]},
        "experiments.0.paper.greybox",
    ),
    "paper_attack_not_run": (
        {"experiments": [{"name": "a", "paper": {"shadow": 0.68}}]},
        "experiment 'a': paper names attacks ['shadow'] that it does not run",
    ),
    "bad_key_in_entry": (
        {"experiments": [{"name": "a", "federation": {"num_participant": 3}}]},
        "experiment 'a': federation.num_participant: unknown key",
    ),
    "bad_swept_value": (
        {"sweep": {"federation.rounds": [5, 0]}},
        "experiment 'a.rounds-0': federation.rounds: Input should be greater than 0",
    ),
    "names_collide": (
        {"sweep": {"attack.features.gradients": [[-1], ["-1"]]}},
        "expanded experiment names collide: ['a.gradients--1', 'b.gradients--1']",
    ),
    "unknown_top_key": ({"experiment": []}, "experiment: unknown key"),
    "repeats_and_seed_sweep": (
        {"repeats": 2, "sweep": {"seed": [0, 1]}},
        "repeats and a sweep over seed both set the seeds",
    ),
    "no_repeats": ({"repeats": 0}, "repeats: Input should be greater than 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_CAMPAIGNS))
def test_bad_campaign_message(tmp_path, case):
    fields, expected = BAD_CAMPAIGNS[case]
    path = write(tmp_path, campaign_text(**fields))
    with pytest.raises(ConfigError) as err:
        load_campaign(path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(str(path))


def test_cli_validate_recognises_a_campaign(tmp_path):
    path = write(tmp_path, campaign_text(sweep={"seed": [0, 1, 2]}))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid campaign 'c' of 6 experiments" in result.output


def test_cli_refuses_a_bad_campaign_with_one_line(tmp_path):
    path = write(tmp_path, campaign_text(sweep={"seed": []}))
    for command in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "o")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2
        assert result.output.strip().startswith("error: ")
        assert "sweeps over no values" in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing ran


EXPERIMENT_FILES = sorted((REPO / "experiments").rglob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENT_FILES, ids=lambda p: p.name)
def test_every_experiment_file_validates(path):
    loaded = load_config(path)
    assert loaded is not None


def test_experiments_folder_has_the_paper_tables():
    names = {p.name for p in EXPERIMENT_FILES}
    assert "quickstart.yaml" in names
    missing = [n for n in range(3, 10) if not any(f.startswith(f"table{n}-") for f in names)]
    assert not missing, f"no campaign for Tables {missing}"


# --- running ---------------------------------------------------------------------------------


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny campaign run once, uninterrupted, in this process."""
    folder = tmp_path_factory.mktemp("reference")
    plan = load_campaign(write(folder, TINY))
    out = folder / "out"
    records = run_campaign(plan, out, show_progress=False, log=lambda message: None)
    return out, records


def test_results_json_has_every_experiment_and_attack(reference):
    out, records = reference
    stored = json.loads((out / "results.json").read_text())
    assert stored == written(records)
    assert [(r["experiment"], r["attack"]) for r in stored] == [
        (FIRST, "whitebox"), (FIRST, "threshold-loss"),
        (SECOND, "whitebox"), (SECOND, "threshold-loss"),
    ]
    assert [r["seed"] for r in stored] == [0, 0, 1, 1]
    assert [r.get(PAPER_KEY) for r in stored] == [0.734, None, 0.734, None]
    per_experiment = json.loads((out / FIRST / "results.json").read_text())
    assert without_timing(stored[:2]) == without_timing(
        [{**r, "seed": 0, **({PAPER_KEY: 0.734} if r["attack"] == "whitebox" else {}),
          "defence": "none", "partition": "iid"}  # the campaign's labels of the experiment
         for r in per_experiment])


def test_results_md_puts_the_paper_beside_the_measurement(reference):
    out, records = reference
    text = (out / "results.md").read_text()
    lines = text.split("\n\n")[0].splitlines()  # the first table: one row per run and attack
    head = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert head.index("paper") == head.index("accuracy") + 1
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert len(rows) == len(records)
    paper = head.index("paper")
    assert [row[paper] for row in rows] == ["0.734", "–", "0.734", "–"]
    accuracy, auc = head.index("accuracy"), head.index("AUC")
    low, high = records[1]["attack_accuracy_ci"]
    assert rows[1][accuracy] == f"{records[1]['attack_accuracy']:.3f} [{low:.3f}, {high:.3f}]"
    low, high = records[1]["auc_ci"]
    assert rows[1][auc] == f"{records[1]['auc']:.3f} [{low:.3f}, {high:.3f}]"
    # 50 non-members resolve neither 1% nor 0.1% FPR: said so, not printed as a number
    assert records[1]["tpr_at_1pct_fpr"] is None and records[1]["min_resolvable_fpr"] == 0.1
    assert rows[1][head.index("TPR@1%FPR")] == "n/a (<5/50)"
    assert rows[1][head.index("TPR@0.1%FPR")] == "n/a (<5/50)"


def test_seed_sweep_is_summarised_by_mean_and_spread(reference):
    out, records = reference
    spread = json.loads((out / "results-over-seeds.json").read_text())
    assert [(r["experiment"], r["attack"], r["seeds"]) for r in spread] == [
        ("fc", "whitebox", [0, 1]), ("fc", "threshold-loss", [0, 1])]
    for row, attack in zip(spread, ("whitebox", "threshold-loss"), strict=True):
        aucs = [r["auc"] for r in records if r["attack"] == attack]
        assert row["auc"]["mean"] == pytest.approx(np.mean(aucs))
        assert row["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
        assert (row["auc"]["min"], row["auc"]["max"]) == (min(aucs), max(aucs))
        assert row["tpr_at_1pct_fpr"] is None
    text = (out / "results.md").read_text()
    assert "Mean ± sample standard deviation [min, max] over seeds" in text
    table = text.split("over seeds:\n\n")[1].splitlines()
    assert len(table) == 2 + 2
    whitebox = spread[0]["auc"]
    assert (f"{whitebox['mean']:.3f} ± {whitebox['std']:.3f} "
            f"[{whitebox['min']:.3f}, {whitebox['max']:.3f}]") in table[2]


def test_campaign_dir_keeps_the_file_and_refuses_another_campaign(reference, tmp_path):
    out, _ = reference
    assert (out / CAMPAIGN_FILE).read_text() == TINY
    other = write(tmp_path, TINY.replace("seed: [0, 1]", "seed: [0, 2]"))
    result = CliRunner().invoke(app, ["run", str(other), "--out", str(out)])
    assert result.exit_code == 2
    assert "holds a different campaign" in result.output


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")
            if p.is_file()}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedattack.cli", *args]


def run_until_first_finished(config: Path, out: Path, timeout: float = 1200) -> None:
    """Start the campaign in a subprocess and SIGKILL it once its first experiment finished."""
    proc = subprocess.Popen(cli("run", str(config), "--out", str(out), "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ})
    deadline = time.monotonic() + timeout
    try:
        while not (out / FIRST / "results.json").exists():
            assert proc.poll() is None, "the campaign exited before its first experiment finished"
            assert time.monotonic() < deadline, "the first experiment did not finish in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def test_rerun_skips_finished_experiments_and_redoes_the_unfinished(reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)  # copy2 keeps the modification times
    (out / SECOND / "results.json").unlink()  # as if killed during the second attack stage
    finished = mtimes(out / FIRST)
    messages = []
    records = run_campaign(load_campaign(out / CAMPAIGN_FILE), out, show_progress=False,
                           log=messages.append)
    assert messages == [f"tiny: experiment 1 of 2: {FIRST} (finished, skipped)",
                        f"tiny: experiment 2 of 2: {SECOND} (running)"]
    assert mtimes(out / FIRST) == finished
    assert (out / SECOND / "results.json").exists()
    assert without_timing(records) == without_timing(reference[1])


def test_only_runs_the_named_experiment_and_leaves_the_others_to_a_later_run(reference,
                                                                           tmp_path):
    plan, out, messages = load_campaign(write(tmp_path, TINY)), tmp_path / "out", []
    records = run_campaign(plan, out, show_progress=False, log=messages.append, only=[SECOND])
    assert messages == [f"tiny: experiment 1 of 2: {FIRST} (not selected, skipped)",
                        f"tiny: experiment 2 of 2: {SECOND} (running)"]
    assert not (out / FIRST).exists()
    assert without_timing(records) == without_timing(reference[1][2:])
    finished = mtimes(out / SECOND)
    messages.clear()
    records = run_campaign(plan, out, show_progress=False, log=messages.append)
    assert messages == [f"tiny: experiment 1 of 2: {FIRST} (running)",
                        f"tiny: experiment 2 of 2: {SECOND} (finished, skipped)"]
    assert mtimes(out / SECOND) == finished
    assert without_timing(records) == without_timing(reference[1])


def test_only_takes_an_entry_or_an_expanded_name_and_refuses_others_in_one_line(tmp_path):
    path = write(tmp_path, TINY)
    plan = load_campaign(path)
    assert selected(plan, ["fc"]) == selected(plan, None) == {FIRST, SECOND}
    assert selected(plan, [FIRST]) == {FIRST}
    with pytest.raises(ConfigError, match=r"--only 'fcc': campaign 'tiny' has no such "
                       r"experiment \(entries: fc\)"):
        selected(plan, ["fcc"])
    for config, message in ((path, "no such experiment"),
                            (write(tmp_path, yaml.safe_dump(yaml.safe_load(TINY)["base"]
                                                            | {"name": "one"}), "one.yaml"),
                             "is one experiment, not a campaign")):
        result = CliRunner().invoke(app, ["run", str(config), "--only", "fcc",
                                          "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        assert result.output.strip().startswith("error: ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.slow  # two CLI processes: about half a minute on an idle machine
def test_killed_campaign_resumes_with_the_same_results(reference, tmp_path):
    config = write(tmp_path, TINY)
    out = tmp_path / "out"
    run_until_first_finished(config, out)
    assert not (out / SECOND / "results.json").exists(), "killed too late to test resuming"
    finished = mtimes(out / FIRST)

    rerun = subprocess.run(cli("run", str(config), "--out", str(out), "--quiet"),
                           capture_output=True, text=True, timeout=1200)
    assert rerun.returncode == 0, rerun.stderr
    assert f"experiment 1 of 2: {FIRST} (finished, skipped)" in rerun.stderr
    assert f"experiment 2 of 2: {SECOND} (running)" in rerun.stderr
    after = mtimes(out / FIRST)  # nothing the finished experiment wrote is rewritten; its
    assert {k: after[k] for k in finished} == finished  # report, due at the campaign's end
    assert set(after) - set(finished) <= {REPORT_HTML, RISK_CSV}  # that the kill cut, is added
    resumed = json.loads((out / "results.json").read_text())
    _, uninterrupted = reference
    assert without_timing(resumed) == without_timing(written(uninterrupted))


def test_paper_figure_per_victim_is_put_beside_that_victim_only():
    from fedattack.campaign import CampaignItem, annotate
    from fedattack.config import Experiment

    item = CampaignItem(Experiment(name="ft", scenario="finetune"), {},
                        {"whitebox": {"D-vs-D-delta": 0.644}, "blackbox": 0.7})
    rows = annotate(item, [{"attack": "whitebox", "victim": "D-vs-D-delta"},
                           {"attack": "whitebox", "victim": "D-vs-nonmembers"},
                           {"attack": "blackbox", "victim": "D-vs-nonmembers"}])
    assert [r.get(PAPER_KEY) for r in rows] == [0.644, None, 0.7]


# --- passive twins -------------------------------------------------------------------------------


TWINS = {
    "base": {"scenario": "federated", "attack": {"attacks": ["whitebox"]}},
    "experiments": [
        {"name": "passive", "attacker": {"kind": "global", "mode": "passive"}},
        {"name": "ascent", "attacker": {"kind": "local", "mode": "gradient-ascent"},
         "attack": {"attacks": ["whitebox", "threshold-loss"]}},
        {"name": "isolating",
         "attacker": {"kind": "global", "mode": "isolating", "targets": [0]}},
        {"name": "ascent-longer", "attacker": {"kind": "local", "mode": "gradient-ascent"},
         "federation": {"rounds": 7}},
    ],
}


def test_an_active_attack_is_compared_with_its_passive_twin(tmp_path):
    from fedattack.campaign import campaign_markdown, passive_twins, with_utility_drop

    plan = load_campaign(write(tmp_path, campaign_text(**TWINS)))
    twins = passive_twins(plan)
    # attack settings and the attacker aside, "passive" trains the same federation; the one
    # trained for 7 rounds has no twin
    assert twins == {"ascent": "passive", "isolating": "passive"}
    records = [
        {"experiment": "passive", "mode": "passive", "attack": "whitebox",
         "global_test_accuracy": 0.80},
        {"experiment": "ascent", "mode": "gradient-ascent", "attack": "whitebox",
         "global_test_accuracy": 0.70},
        {"experiment": "ascent", "mode": "gradient-ascent", "attack": "threshold-loss",
         "global_test_accuracy": 0.70},
        {"experiment": "isolating", "mode": "isolating", "attack": "whitebox",
         "global_test_accuracy": 0.77},
        {"experiment": "ascent-longer", "mode": "gradient-ascent", "attack": "whitebox",
         "global_test_accuracy": 0.10},
    ]
    marked = with_utility_drop(records, twins)
    by = {(r["experiment"], r["attack"]): r for r in marked}
    ascent = by[("ascent", "whitebox")]
    assert ascent["passive_twin"] == "passive"
    assert ascent["global_test_accuracy_drop"] == pytest.approx(0.10)
    assert ascent["utility_flag"] is True
    assert by[("ascent", "threshold-loss")]["utility_flag"] is True
    assert by[("isolating", "whitebox")]["global_test_accuracy_drop"] == pytest.approx(0.03)
    assert by[("isolating", "whitebox")]["utility_flag"] is False
    assert "utility_flag" not in by[("passive", "whitebox")]
    assert "utility_flag" not in by[("ascent-longer", "whitebox")]  # no twin: nothing claimed
    # the twin has not run yet: nothing claimed either
    assert "utility_flag" not in with_utility_drop(records[1:2], twins)[0]

    text = campaign_markdown(marked, [])
    head, *rest = text.split("\n\n")
    lines = head.splitlines()
    column = [c.strip() for c in lines[0].strip("|").split("|")].index("drop vs passive")
    cells = [[c.strip() for c in line.strip("|").split("|")][column] for line in lines[2:]]
    assert cells == ["–", "0.100 (>5 pts)", "0.100 (>5 pts)", "0.030", "–"]
    flagged = [line for line in text.splitlines() if line.startswith("- ")]
    assert flagged == ["- ascent (gradient-ascent): global test accuracy 0.700 against 0.800 "
                       "passive (passive), a drop of 10.0 points"]


SHARED = """\
campaign: shared
description: two attack settings on one model, and a model trained differently
base:
  scenario: standalone
  device: cpu
  data:
    dataset: purchase100-synth
    num_records: 600
    train_size: 100
    nonmember_size: 200
    knowledge: {train_members: 50, train_nonmembers: 50, test_members: 50, test_nonmembers: 50}
  training: {epochs: 3}
  attack: {attacks: [whitebox, threshold-loss], epochs: 2, kernels: 8}
experiments:
  - name: gradients
  - name: outputs
    attack: {features: {gradients: [], activations: [-2], output: false, loss: false}}
  - name: longer
    training: {epochs: 4}
"""


def test_entries_that_differ_only_in_attack_share_one_trained_model(tmp_path, monkeypatch):
    import fedattack.standalone as standalone

    trained: list[str] = []
    real = standalone.run_standalone

    def counting(exp, run_dir, **kwargs):
        trained.append(exp.name)
        return real(exp, run_dir, **kwargs)

    monkeypatch.setattr(standalone, "run_standalone", counting)
    out = tmp_path / "out"
    plan = load_campaign(write(tmp_path, SHARED))
    records = run_campaign(plan, out, show_progress=False, log=lambda message: None)
    assert trained == ["gradients", "longer"]
    run = json.loads((out / "outputs" / "run.json").read_text())
    assert run["experiment"] == "outputs" and run["trained_in"] == "gradients"
    assert "trained_in" not in json.loads((out / "longer" / "run.json").read_text())
    first = sorted(p.relative_to(out / "gradients") for p in (out / "gradients" / "snapshots")
                   .rglob("*") if p.is_file())
    assert first and all((out / "gradients" / p).read_bytes() == (out / "outputs" / p)
                         .read_bytes() for p in first)
    loss = {r["experiment"]: r["auc"] for r in records if r["attack"] == "threshold-loss"}
    assert loss["outputs"] == loss["gradients"]  # the same model on the same targets
    features = {r["experiment"]: r["features"] for r in records if r["attack"] == "whitebox"}
    assert features["outputs"] != features["gradients"]
    # A rerun reads everything back and trains nothing.
    trained.clear()
    assert without_timing(run_campaign(plan, out, show_progress=False,
                                       log=lambda message: None)) == without_timing(records)
    assert trained == []


def test_an_isolated_victims_own_model_is_compared_with_the_passive_federation(tmp_path):
    from fedattack.campaign import flagged_lines, passive_twins, with_utility_drop

    twins = passive_twins(load_campaign(write(tmp_path, campaign_text(**TWINS))))
    records = [
        {"experiment": "passive", "mode": "passive", "attack": "whitebox",
         "global_test_accuracy": 0.80},
        {"experiment": "isolating", "mode": "isolating", "attack": "whitebox",
         "global_test_accuracy": 0.79, "isolated_test_accuracy": 0.60},
    ]
    isolating = with_utility_drop(records, twins)[1]
    # the global model barely moved, but the victim's model is 20 points below the federation's
    assert isolating["global_test_accuracy_drop"] == pytest.approx(0.01)
    assert isolating["victim_test_accuracy_drop"] == pytest.approx(0.20)
    assert isolating["utility_flag"] is True
    (line,) = flagged_lines([isolating])
    assert "the isolated victim's model 0.600, 20.0 points below" in line
    records[1]["isolated_test_accuracy"] = 0.78
    assert with_utility_drop(records, twins)[1]["utility_flag"] is False
