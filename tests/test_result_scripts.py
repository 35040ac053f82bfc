"""The scripts that render committed result folders: docs/results/table10/render.py (Table X
before/after with paired intervals) and docs/results/gan-sweep/readme.py (the GAN sweep's
verdicts)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


render = load(ROOT / "docs" / "results" / "table10" / "render.py", "table10_render")
readme = load(ROOT / "docs" / "results" / "gan-sweep" / "readme.py", "gan_sweep_readme")


def entry(folder: Path, name: str, labels, scores: dict, accuracy: float,
          targets=None) -> None:
    from fedattack.metrics import auc

    folder = folder / name
    folder.mkdir(parents=True)
    targets = list(range(len(labels))) if targets is None else targets
    rows = [{"experiment": name, "attack": a, "auc": round(auc(labels, s), 4),
             "auc_ci": [0.0, 1.0], "global_test_accuracy": accuracy, "inverted": False}
            for a, s in scores.items()]
    (folder / "results.json").write_text(json.dumps(rows))
    (folder / "scores.json").write_text(json.dumps(
        {"targets": targets, "labels": list(map(int, labels)),
         "scores": {a: list(map(float, s)) for a, s in scores.items()}}))


def test_table10_render_pairs_rows_on_the_same_targets(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(50), np.zeros(50)]
    noise = rng.normal(size=100)
    for phase in ("before", "after"):
        entry(tmp_path / phase, "global-passive", labels, {"whitebox": noise}, 0.70)
    entry(tmp_path / "before", "global-gradient-ascent", labels, {"whitebox": noise}, 0.66)
    entry(tmp_path / "after", "global-gradient-ascent", labels,
          {"whitebox": labels + 0.1 * noise}, 0.64)
    table, paired = render.render(tmp_path)
    by = {(d["phase"], d["experiment"], d["attack"]): d for d in paired}
    assert by["before", "global-gradient-ascent", "whitebox"]["difference"] == 0.0
    after = by["after", "global-gradient-ascent", "whitebox"]
    assert after["ci"][0] > 0  # a perfect row against noise: the paired interval excludes 0
    assert by["after-minus-before", "global-gradient-ascent", "whitebox"]["ci"][0] > 0
    assert "0.640 (-0.060)" in table and "0.660 (-0.040)" in table


def test_table10_render_refuses_scores_that_disagree_with_results(tmp_path):
    labels = np.r_[np.ones(20), np.zeros(20)]
    entry(tmp_path / "after", "global-passive", labels, {"whitebox": labels * 1.0}, 0.7)
    rows = json.loads((tmp_path / "after" / "global-passive" / "results.json").read_text())
    rows[0]["auc"] = 0.6
    (tmp_path / "after" / "global-passive" / "results.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="AUC 1.0000 from scores.json"):
        render.render(tmp_path)


def test_table10_render_refuses_rows_scored_on_different_targets(tmp_path):
    labels = np.r_[np.ones(20), np.zeros(20)]
    entry(tmp_path / "after", "global-passive", labels, {"whitebox": labels * 1.0}, 0.7)
    entry(tmp_path / "after", "global-gradient-ascent", labels, {"whitebox": labels * 1.0}, 0.7,
          targets=list(range(100, 140)))
    with pytest.raises(ValueError, match="different targets"):
        render.render(tmp_path)


def test_table10_twins_of_the_paper_step_variants():
    assert render.twins("global-passive") == []
    assert render.twins("global-gradient-ascent-absolute") == ["global-passive"]
    assert render.twins("global-isolating-gradient-ascent-absolute") == [
        "global-passive", "global-isolating"]


@pytest.mark.parametrize(("k", "low", "high", "expected"), [
    (10, 0.69, 1.0, "succeeds"), (0, 0.0, 0.31, "fails"), (5, 0.19, 0.81, "undecided"),
    (None, None, None, "unresolved")])
def test_gan_sweep_verdict_reads_the_window_interval(k, low, high, expected):
    row = {"window_successes": k, "window_rounds": 10, "window_ci_low": low,
           "window_ci_high": high}
    assert readme.verdict(row) == expected
