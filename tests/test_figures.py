"""Figures are written and say how many records stand behind them."""

import matplotlib
import numpy as np

matplotlib.use("Agg")

from fedattack import reporting  # noqa: E402


def test_per_class_figure_gives_the_number_of_targets_per_class(tmp_path, monkeypatch):
    titles = []
    real = reporting._pyplot

    def spy():
        plt = real()
        monkeypatch.setattr(plt, "close", lambda fig: titles.append(fig.axes[0].get_title()))
        return plt

    monkeypatch.setattr(reporting, "_pyplot", spy)
    path = tmp_path / "per_class.png"
    reporting.plot_per_class({0: 0.6, 1: 0.4, 2: 0.55}, path, "white-box", {0: 12, 1: 3, 2: 9})
    assert path.stat().st_size > 1000
    assert titles == ["white-box (3-12 targets per class)"]


def test_roc_legend_gives_auc_and_log_axes_start_at_the_smallest_resolvable_fpr(
        tmp_path, monkeypatch):
    import numpy as np

    seen = {}
    real = reporting._pyplot

    def spy():
        plt = real()

        def close(fig):
            linear, log = fig.axes
            seen["legend"] = [t.get_text() for t in linear.get_legend().get_texts()]
            seen["xlim"], seen["ylim"] = log.get_xlim(), log.get_ylim()

        monkeypatch.setattr(plt, "close", close)
        return plt

    monkeypatch.setattr(reporting, "_pyplot", spy)
    curve = {"fpr": np.linspace(0, 1, 11), "tpr": np.linspace(0, 1, 11) ** 0.5,
             "auc": 0.682, "auc_ci": (0.650, 0.714), "min_resolvable_fpr": 5 / 500}
    path = tmp_path / "roc.png"
    reporting.plot_roc({"whitebox": curve}, path, "roc")
    assert path.stat().st_size > 1000
    assert seen["legend"] == ["whitebox (AUC 0.682 [0.650, 0.714])"]
    assert seen["xlim"][0] == seen["ylim"][0] == 0.01


def _row(experiment, attack, shift, acc, defence, attacker="global", strongest=True):
    from tests.fakes import result_row

    return result_row(attack=attack, shift=shift, n=300, experiment=experiment,
                      global_test_accuracy=acc, defence=defence, partition="iid",
                      attacker=attacker, strongest=strongest or None)


def test_strongest_rows_are_the_rows_chosen_strongest():
    from fedattack.reporting import strongest_rows

    records = [_row("a", "threshold-loss", 0.5, 0.6, "none", strongest=False),
               _row("a", "rmia-offline", 1.0, 0.6, "none"),
               _row("c", "fedmia", 0.2, 0.4, "DP-SGD z=1")]
    assert strongest_rows(records) == [records[1], records[2]]


def test_privacy_utility_figure_draws_the_report_halfs_figures(tmp_path, monkeypatch):
    from fedattack.reporting import plot_privacy_utility

    drawn = []
    real = reporting._pyplot

    def spy():
        plt = real()

        def close(fig):
            drawn.extend((ax.get_ylabel(), len(ax.containers)) for ax in fig.axes[::2])

        monkeypatch.setattr(plt, "close", close)
        return plt

    monkeypatch.setattr(reporting, "_pyplot", spy)
    records = [_row("a", "rmia-offline", 1.0, 0.6, "none"),
               _row("b", "rmia-offline", 0.1, 0.5, "DP-SGD z=1"),
               _row("c", "loss-series", 0.5, 0.55, "SecAgg+", attacker="local")]
    path = tmp_path / "privacy-utility.png"
    plot_privacy_utility(records, path)
    assert path.stat().st_size > 10_000
    # 150 non-members on a report half resolve no TPR at 1% FPR: only the AUCs are drawn
    assert drawn == [("strongest attack's TPR at 1% FPR (95% CI)", 0),
                     ("strongest attack's AUC (95% CI)", 2)]


def test_the_class_count_map_of_many_participants_stays_page_sized(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(1000, 100)).tolist()
    reporting.plot_class_counts(counts, tmp_path / "c.png", "1,000 participants")
    with Image.open(tmp_path / "c.png") as image:
        width, height = image.size
    assert width <= 16 * 120 and height <= 12 * 120  # not a row of 0.25 inch per participant
    few = rng.integers(0, 5, size=(8, 10)).tolist()
    reporting.plot_class_counts(few, tmp_path / "few.png", "8 participants")
    with Image.open(tmp_path / "few.png") as image:
        assert image.size[1] >= 2.5 * 120 * 0.9
