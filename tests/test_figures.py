"""Figures are written and say how many records stand behind them."""

import matplotlib

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
