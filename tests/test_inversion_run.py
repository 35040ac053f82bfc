"""The `inversion:` block: validated with one-line errors, run by `fedattack run` after training,
its rows in the run's results.json and results.md beside the membership attacks', resumed
without recomputing a finished attack.

The fast tests record the federated round without Ray (tests/test_inversion_stage.record_round:
the honest participant's own training and FedAvg); the run through a real Flower simulation is
marked slow.
"""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from fedattack import runner
from fedattack.cli import app
from fedattack.config import ConfigError, Experiment, experiment_yaml, parse_experiment
from fedattack.experiment import RUN_FILE
from fedattack.inversion import registry
from fedattack.inversion.stage import OUT_DIR, ROWS_DIR
from fedattack.io import read_json
from fedattack.results import read_rows
from tests.test_inversion_stage import FEDSGD, record_round

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"attacks": ["inverting-gradients"], "distractors": 20,
        "params": {"inverting-gradients": {"iterations": 2, "restarts": 1}}}


def experiment(**inversion) -> dict:
    return {**FEDSGD, "name": "inversion-run", "inversion": {**FAST, **inversion}}


@pytest.mark.parametrize(("block", "message"), [
    ({"attacks": ["dgl"]}, "inversion.attacks: unknown reconstruction attack 'dgl'; did you "
                           "mean 'dlg'?"),
    ({"victims": [2]}, "inversion.victims: participants [2] do not exist; accepted: 0..1"),
    ({"rounds": [2]}, "inversion.rounds: [2] not recorded (the last round is 1"),
    ({"params": {"inverting-gradients": {"iterations": 0}}},
     "inversion.params: inverting-gradients.iterations: Input should be greater than 0"),
    ({"params": {"inverting-gradients": {"restart": 2}}},
     "inversion.params: inverting-gradients.restart: Extra inputs are not permitted"),
    ({"params": {"dlg": {}}}, "inversion.params: ['dlg'] not among inversion.attacks"),
    ({"observe": "both"}, "inversion.observe: got 'both'"),
    ({"distractors": -1}, "inversion.distractors: Input should be greater than or equal to 0"),
    ({"attacks": []}, "inversion.attacks: List should have at least 1 item"),
    ({"max_records": True}, "inversion.max_records: got True; a boolean is not a number"),
    ({"iterations": 5}, "inversion.iterations: unknown key"),
])
def test_bad_values_of_the_block_are_refused_in_one_line(block, message):
    with pytest.raises(ConfigError) as err:
        parse_experiment({**FEDSGD, "inversion": block}, "exp.yaml")
    text = str(err.value)
    assert text.startswith(f"exp.yaml: {message}") and "\n" not in text, text


def test_the_block_fits_the_experiment_or_is_refused():
    for changes, message in (
            ({"scenario": "standalone", "federation": {"num_participants": 2, "rounds": 1}},
             "inversion: gradient inversion attacks a federated run's uploads"),
            ({"federation": {"num_participants": 2, "rounds": 1, "clients_per_round": 1},
              "inversion": {"observe": "aggregate"}},
             "inversion: inverting a round's aggregate needs every participant")):
        with pytest.raises(ConfigError, match=message):
            parse_experiment({**FEDSGD, "inversion": {}, **changes}, "exp.yaml")
    exp = parse_experiment(experiment(observe="aggregate", victims=[1]), "exp.yaml")
    assert exp.inversion.observe == "aggregate" and exp.inversion.victims == [1]
    assert parse_experiment(FEDSGD, "exp.yaml").inversion is None  # absent: no stage


def test_validate_refuses_a_bad_block_in_one_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**FEDSGD, "inversion": {"victims": [5]}}))
    done = CliRunner().invoke(app, ["validate", "--no-data", str(path)])
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
    assert "inversion.victims: participants [5] do not exist" in done.output


@pytest.fixture
def no_ray(monkeypatch):
    """Training records round 1 as the recording aggregator does, without Ray."""
    def run_federated(exp, run_dir, on_round=None, verbose=False, prepared=None):
        record_round(exp, run_dir)
        record = {"status": "finished", "experiment": exp.name,
                  "history": [{"round": 1, "train_accuracy": 0.5, "test_accuracy": 0.25}]}
        (run_dir / RUN_FILE).write_text(json.dumps(record))
        return record

    monkeypatch.setattr("fedattack.simulation.run_federated", run_federated)


interrupt_at: set[int] = set()


@pytest.fixture
def counted(monkeypatch):
    """Count the reconstruction attack's runs (each a call of its run function); a run whose
    number is in `interrupt_at` (1-based) is interrupted as by Ctrl-C."""
    calls = []
    attack = registry.get("inverting-gradients")
    real = attack.run

    def run(target, params, device):
        calls.append(target.num_records)
        if len(calls) in interrupt_at:
            raise KeyboardInterrupt
        return real(target, params, device)

    monkeypatch.setitem(registry._REGISTRY, attack.name,
                        registry.ReconstructionAttack(attack.name, run, attack.params,
                                                      attack.knowledge, attack.threat_model,
                                                      attack.description))
    yield calls
    interrupt_at.clear()


def test_fedattack_run_with_the_block_writes_inversion_rows_and_reruns_read_them(
        tmp_path, no_ray, counted):
    path = tmp_path / "exp.yaml"
    path.write_text(experiment_yaml(Experiment.model_validate(experiment())))
    run_dir = tmp_path / "run"
    done = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir), "--quiet"])
    assert done.exit_code == 0, done.output
    assert counted == [1, 1]  # participants 0 and 1, one record each
    stored = read_json(run_dir / "results.json")
    assert [(r["attack"], r["victim"]) for r in stored] == [
        ("inverting-gradients", "participant-0"), ("inverting-gradients", "participant-1")]
    for row in stored:
        assert row["schema_version"] == 3 and row["n_candidates"] == 21
        assert row["attacker"] == "global" and row["mode"] == "passive"
        assert row["snapshots"] == "round 1" and row["iterations"] == 2
        assert row["global_test_accuracy"] == 0.25 and "auc" not in row
        assert row["psnr_ci"][0] <= row["psnr"] <= row["psnr_ci"][1]
        assert 0 <= row["identification_rate_ci"][0] <= row["identification_rate_ci"][1] <= 1
    rows = read_rows(run_dir / "results.json")
    assert [r.to_dict() for r in rows] == stored and all(r.figures is None for r in rows)
    assert "PSNR (dB)" in (run_dir / "results.md").read_text()
    assert "inverting-gradients" in done.output and "PSNR" in done.output
    assert runner.experiment_finished(Experiment.model_validate(experiment()), run_dir)
    again = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir), "--quiet"])
    assert again.exit_code == 0, again.output
    assert counted == [1, 1]  # nothing recomputed
    assert read_json(run_dir / "results.json") == stored


def test_an_interrupted_stage_keeps_the_attacks_it_finished(tmp_path, no_ray, counted):
    exp = Experiment.model_validate(experiment())
    interrupt_at.add(2)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(exp, tmp_path, show_progress=False)
    assert len(counted) == 2 and not (tmp_path / "results.json").exists()
    assert not runner.experiment_finished(exp, tmp_path)
    kept = sorted(p.name for p in (tmp_path / OUT_DIR / ROWS_DIR).iterdir())
    assert kept == ["inverting-gradients-participant-0-r1.json"]
    _, results = runner.run_experiment(exp, tmp_path, show_progress=False)
    assert len(counted) == 3  # participant 1 alone was attacked again
    assert [r.victim for r in results] == ["participant-0", "participant-1"]


def test_a_row_of_other_settings_is_not_reused(tmp_path, no_ray, counted):
    runner.run_experiment(Experiment.model_validate(experiment(victims=[0])), tmp_path / "a",
                          show_progress=False)
    assert counted == [1]
    from fedattack.inversion.stage import InversionSettings, invert_run

    same = InversionSettings(**{**FAST, "victims": [0]})
    rows = invert_run(tmp_path / "a", same, log=lambda _: None)
    assert counted == [1] and rows[0]["iterations"] == 2  # the same settings: reused
    for changed in ({"params": {"inverting-gradients": {"iterations": 3, "restarts": 1}}},
                    {"distractors": 30}):
        invert_run(tmp_path / "a", same.model_copy(update=changed), log=lambda _: None)
    assert counted == [1, 1, 1]  # more iterations, other distractors: attacked again


def test_the_aggregate_is_inverted_when_asked(tmp_path, no_ray, counted):
    exp = Experiment.model_validate(experiment(observe="aggregate"))
    _, results = runner.run_experiment(exp, tmp_path, show_progress=False)
    (row,) = results
    assert counted == [2] and row.victim == "all (aggregate)" and row["n_records"] == 2
    assert row.observed.startswith("the round's released aggregate")


@pytest.mark.slow
def test_fedattack_run_through_a_flower_simulation(tmp_path):
    exp = Experiment.model_validate(experiment(victims=[1]))
    record, results = runner.run_experiment(exp, tmp_path, show_progress=False)
    assert record["status"] == "finished"
    assert [(r.attack, r.victim) for r in results] == [("inverting-gradients", "participant-1")]
    assert results[0]["label_accuracy"] == 1 and results[0]["n_candidates"] == 21


def test_a_campaign_of_inversion_cells_shares_the_training_and_tables_the_rows(
        tmp_path, no_ray, counted, monkeypatch):
    from fedattack.campaign import plan_campaign, run_campaign

    trainings = []
    import fedattack.simulation as simulation

    fake = simulation.run_federated
    monkeypatch.setattr(simulation, "run_federated",
                        lambda exp, run_dir, **kw: trainings.append(exp.name) or fake(exp,
                                                                                      run_dir))
    data = {"campaign": "inv", "base": {k: v for k, v in experiment().items() if k != "name"},
            "experiments": [{"name": "first", "inversion": {"victims": [0]}},
                            {"name": "second", "inversion": {"victims": [1]}}]}
    plan = plan_campaign(data, yaml.safe_dump(data), "inv.yaml")
    records = run_campaign(plan, tmp_path, show_progress=False, log=lambda _: None)
    assert trainings == ["first"]  # the second differs only in its inversion: shared
    assert [(r["experiment"], r["victim"]) for r in records] == [
        ("first", "participant-0"), ("second", "participant-1")]
    assert all(r["defence"] == "none" for r in records)
    text = (tmp_path / "results.md").read_text()
    assert "PSNR (dB)" in text and "AUC" not in text
    assert [r["victim"] for r in read_json(tmp_path / "results.json")] == [
        "participant-0", "participant-1"]


def test_the_defence_campaign_render_reads_the_committed_rows(tmp_path):
    """docs/results/inversion-defences/render.py: Clopper-Pearson counts pooled per cell, from
    the committed results.json; the figures are written."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs/results/inversion-defences/render.py"
    spec = importlib.util.spec_from_file_location("inversion_defences_render", path)
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    low, high = render.clopper_pearson(1, 1)
    assert low == pytest.approx(0.025) and high == 1.0  # 0.025 ** (1 / 1)
    assert render.clopper_pearson(0, 1) == (0.0, pytest.approx(0.975))
    render.main(["render", str(path.parent / "results.json"), str(tmp_path)])
    text = (tmp_path / "table.md").read_text()
    assert "| none | none | 2 | 26.1 [25.5, 26.6] | 2/2 [0.16, 1.00]" in text
    assert "| batch-4 | none | 4 | 14.0 | 4/4 [0.40, 1.00] | 3/4 [0.19, 0.99]" in text
    assert all((tmp_path / f).stat().st_size for f in ("defences.png", "client-dp.png"))
