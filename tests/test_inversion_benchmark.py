"""benchmarks/inversion.py in its tiny mode: the cost ratios come out finite, and the comparison
with breaching says in one line why it is skipped where breaching cannot be imported."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "inversion.py"


def benchmark():
    spec = importlib.util.spec_from_file_location("inversion_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cost_prints_finite_ratios(capsys):
    out = benchmark().main(["cost", "--tiny", "--steps", "1"])
    assert out["restarts"] == 2 and out["records"] == 1
    for key in ("step_per_restart_over_reference", "looped_over_batched"):
        assert math.isfinite(out[key]) and out[key] > 0
    assert "one restart's step / one forward+backward" in capsys.readouterr().out


def test_breaching_comparison_is_skipped_in_one_line_without_it(capsys):
    if importlib.util.find_spec("breaching") is not None:
        pytest.skip("breaching is installed here: the comparison runs instead")
    assert benchmark().main(["breaching", "--tiny"]) is None
    printed = capsys.readouterr().out
    assert printed.startswith("skipped: breaching") and printed.count("\n") == 1
