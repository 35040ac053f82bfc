"""Result rows are typed records: the mean over victims is built from each field's declared role
(never copied from the first victim's row), results.json is written and read back through them,
an inverted attack is flagged and never averaged silently, and the strongest attack of an
experiment is chosen on the selection half of the targets, blind to the report half's
membership."""

import json
from dataclasses import fields

import numpy as np
import pytest

from fedattack import reporting
from fedattack.attack_registry import AttackOutcome
from fedattack.audit import Audit
from fedattack.membership import evaluate
from fedattack.metrics import AttackMetrics, Selection, target_halves
from fedattack.records import FIGURE_RELATIVE_RESOLUTION, Mean, role
from fedattack.results import ResultRow, mark_strongest, mean_row, mean_rows, read_rows
from tests.fakes import result_row


def two_victims():
    """Participant 0 and 1 of a Dirichlet run: different models, different accuracies."""
    first = result_row("participant-0", seed=0, target_train_accuracy=0.62,
                       target_test_accuracy=0.54, isolated_test_accuracy=0.5)
    second = result_row("participant-1", seed=1, shift=2.0, target_train_accuracy=0.90,
                        target_test_accuracy=0.78, isolated_test_accuracy=0.7)
    return first, second


def test_the_mean_row_averages_every_per_victim_figure():
    first, second = two_victims()
    mean = mean_row([first, second])
    assert mean.victim == "mean of 2"
    # the model accuracies are the victims' mean, not the first victim's (0.62 / 0.54)
    assert mean.target_train_accuracy == pytest.approx(0.76)
    assert mean.target_test_accuracy == pytest.approx(0.66)
    assert mean.isolated_test_accuracy == pytest.approx(0.6)
    for key in ("attack_accuracy", "auc", "tpr", "fpr", "best_accuracy"):
        assert mean[key] == pytest.approx((first[key] + second[key]) / 2), key
    assert mean["n_members"] == first["n_members"] + second["n_members"]
    assert mean.held_out.auc == pytest.approx((first.held_out.auc + second.held_out.auc) / 2)
    assert mean.selection.tpr == pytest.approx((first.selection.tpr + second.selection.tpr) / 2)
    # shared by construction: kept; the interval recomputed from the mean of the resamples
    assert (mean.experiment, mean.global_test_accuracy, mean.epsilon) == ("e", 0.7, None)
    low, high = mean["auc_ci"]
    assert low < mean["auc"] < high and high - low < first["auc_ci"][1] - first["auc_ci"][0]


def test_per_victim_fields_are_left_out_of_the_mean_row():
    first, second = two_victims()
    trained = {"best_epoch": 3, "epochs_trained": 5, "val_auc": 0.7,
               "threshold_loss_val_auc": 0.6, "history": [{"epoch": 1}], "undertrained": False}
    mean = mean_row([first.annotated(trained),
                     second.annotated({**trained, "undertrained": True, "best_epoch": 4})])
    for key in ("best_epoch", "epochs_trained", "val_auc", "threshold_loss_val_auc", "history"):
        assert key not in mean, key
    assert mean["undertrained"] is True  # a flag: raised by any victim
    # observed rounds that client sampling made differ are left out, equal ones kept
    assert mean_row([first, second.annotated({"snapshots": "round-2"})]).snapshots is None
    assert mean_row([first, second]).snapshots == "round-1"


def test_a_field_shared_by_construction_that_differs_is_refused():
    first, second = two_victims()
    with pytest.raises(ValueError, match="epsilon differs between the victims' rows"):
        mean_row([first.annotated({"epsilon": 2.0}), second.annotated({"epsilon": 3.0})])


def test_every_field_of_a_result_row_declares_its_role_in_the_mean():
    for record in (ResultRow, AttackMetrics, Selection, Audit):
        for f in fields(record):
            assert isinstance(role(f), Mean), (record.__name__, f.name)


def test_an_inverted_attack_is_flagged_and_never_averaged_silently(tmp_path):
    good = result_row("participant-0", shift=1.0)
    inverted = result_row("participant-1", shift=-1.0, seed=1)  # AUC about 0.24
    assert inverted["auc_ci"][1] < 0.5 and inverted.inverted and not good.inverted
    mean = mean_row([good, inverted])
    assert mean.inverted_victims == ("participant-1",)
    assert mean["auc"] == pytest.approx((good["auc"] + inverted["auc"]) / 2)  # averaged in
    assert mean.inverted is (mean["auc_ci"][1] < 0.5)
    reporting.write_results(tmp_path, [good, inverted, mean])
    md = (tmp_path / "results.md").read_text().splitlines()
    assert md[0].endswith("| flags |")
    assert md[3].endswith("| inverted |")
    assert md[4].endswith("| averages 1 inverted row(s): participant-1 |")
    written = json.loads((tmp_path / "results.json").read_text())
    assert written[1]["inverted"] is True and written[2]["inverted_victims"] == ["participant-1"]


def test_results_json_is_written_from_rows_rounded_and_read_back(tmp_path):
    first, second = two_victims()
    audit = Audit(threshold=1.234567891234, selection_bound=0.5, tpr_lower=0.123456789,
                  fpr_upper=0.01, n_members=100, n_nonmembers=100, confidence=0.95, delta=1e-5)
    row = first.annotated({"federation.rounds": 3, "epsilon_lower_bound": 0.1234567891,
                           "audit": audit, "defence": "DP-SGD z=1"})
    rows = [row, second, mean_row([first, second])]
    reporting.write_results(tmp_path, rows)
    stored = json.loads((tmp_path / "results.json").read_text())
    assert all(r["schema_version"] == 3 for r in stored)
    assert stored[0]["epsilon_lower_bound"] == 0.123457  # a figure: 6 significant digits
    assert stored[0]["audit"]["threshold"] == 1.234567891234  # a score: never rounded
    assert stored[0]["federation.rounds"] == 3  # a key the schema does not declare, kept
    assert stored[0]["auc"] == pytest.approx(first["auc"], rel=FIGURE_RELATIVE_RESOLUTION)
    back = read_rows(tmp_path / "results.json")
    assert all(isinstance(r, ResultRow) for r in back)
    assert [r.to_dict() for r in back] == stored
    assert back[0].audit == Audit(1.234567891234, 0.5, 0.123457, 0.01, 100, 100, 0.95, 1e-5)
    assert back[0].extra == {"federation.rounds": 3} and back[0]["auc_ci"] == stored[0]["auc_ci"]
    with pytest.raises(ValueError, match="schema version 4"):
        ResultRow.from_dict({**stored[0], "schema_version": 4})
    # version 2 wrote membership rows as version 3 does
    assert ResultRow.from_dict({**stored[0], "schema_version": 2}).to_dict() == stored[0]


def test_a_version_1_mean_row_loses_the_figures_it_copied_from_its_first_victim():
    first, second = two_victims()
    v1 = {k: v for k, v in mean_row([first, second]).to_dict().items()
          if k not in ("schema_version", "selection", "held_out", "inverted")}
    v1.update(target_train_accuracy=0.62, target_test_accuracy=0.54, best_accuracy=0.7)
    old = ResultRow.from_dict(v1)
    assert (old.target_train_accuracy, old.target_test_accuracy, old["best_accuracy"]) == \
        (None, None, None)
    assert old["auc"] == v1["auc"] and old.held_out is None
    # a victim's own row of version 1 keeps them; its same-target DP audit is left out
    own = {k: v for k, v in first.to_dict().items() if k != "schema_version"}
    kept = ResultRow.from_dict({**own, "epsilon_lower_bound": 2.0,
                                "audit": {"threshold": 1.0, "tpr_lower": 0.5}})
    assert kept.target_train_accuracy == 0.62 and kept.epsilon_lower_bound is None
    assert kept.audit is None


def rows_of(labels, halves, scores_by_attack, seed=(0, 1)):
    """The pipeline's evaluation of each attack's scores, as rows of one victim."""
    rows = []
    for name, scores in scores_by_attack.items():
        done = evaluate(labels, halves, AttackOutcome(name, "x", scores, threshold=0.0), seed)
        rows.append(ResultRow(
            experiment="e", scenario="federated", attacker="global", mode="passive",
            knowledge="observed", attack=name, features="x", victim="participant-0",
            snapshots="round-1", figures=done.figures, selection=done.selection,
            held_out=done.held_out))
    return rows


def test_the_strongest_attack_is_chosen_blind_to_the_report_halfs_membership():
    labels = np.r_[np.ones(500, int), np.zeros(500, int)]
    halves = target_halves(labels, (0, 1))
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(3, 1000))
    in_select = np.isin(np.arange(1000), halves.select)
    # "report-only" separates members strongly on the report half and not at all on the
    # selection half; "select-only" the reverse, less strongly: on all the targets the first
    # is the stronger, but only the selection half may choose
    scores = {"noise": noise[0],
              "report-only": noise[1] + 4.0 * labels * ~in_select,
              "select-only": noise[2] + 2.0 * labels * in_select}
    chosen = [r for r in mark_strongest(rows_of(labels, halves, scores)) if r.strongest]
    assert [r.attack for r in chosen] == ["select-only"]
    full = {r.attack: r["tpr_at_1pct_fpr"] for r in rows_of(labels, halves, scores)}
    assert full["report-only"] > full["select-only"]  # what a choice on all targets would take
    assert "selection half" in chosen[0].strongest_chosen_on
    assert chosen[0].held_out.auc == pytest.approx(0.5, abs=0.06)  # its report-half figure
    # the report half's membership permuted: the same choice, other reported figures
    permuted = labels.copy()
    permuted[halves.report] = rng.permutation(labels[halves.report])
    again = [r for r in mark_strongest(rows_of(permuted, halves, scores)) if r.strongest]
    assert [r.attack for r in again] == ["select-only"]
    assert again[0].selection == chosen[0].selection
    assert again[0].held_out.auc != chosen[0].held_out.auc
    # the selection half's membership permuted the same way: the choice may move
    moved = labels.copy()
    moved[halves.select] = rng.permutation(labels[halves.select])
    assert [r.selection for r in rows_of(moved, halves, scores)] != \
        [r.selection for r in rows_of(labels, halves, scores)]


def test_the_strongest_attack_of_a_multi_victim_experiment_is_a_mean_row(tmp_path):
    rows = [result_row(f"participant-{p}", attack=a, shift=s, seed=p)
            for p in range(2) for a, s in (("weak", 0.3), ("strong", 1.5))]
    flagged = mark_strongest(rows + mean_rows(rows))
    assert [(r.attack, r.victim) for r in flagged if r.strongest] == [("strong", "mean of 2")]
    assert reporting.strongest_rows(flagged) == [r for r in flagged if r.strongest]
    reporting.write_results(tmp_path, flagged)
    md = (tmp_path / "results.md").read_text()
    held = flagged[-1].held_out
    assert ("Strongest attack of e: strong (mean of 2), chosen on the selection half" in md
            and f"AUC {held.auc:.3f} [{held.auc_ci[0]:.3f}, {held.auc_ci[1]:.3f}]" in md
            and "on 200 + 200 targets." in md)
