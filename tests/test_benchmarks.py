"""Every benchmark under benchmarks/ runs in its tiny mode (`--tiny`), end to end, and prints its
figures: none can rot unnoticed, as fl_overhead.py did when the quickstart gained snapshots it
could not record (issue 28). A tiny run's figures mean nothing; only that each is printed, and
finite, is checked.

Three take about a minute of CPU each even tiny (the Flower ones start Ray and simulate
federations; per_example_grads measures memory in fresh processes, one a full white-box attack):
slow-marked, run by .ci/run, as is fl_apis (half a minute: it records the quickstart model's
uploads both ways); reference_models and parse_time run in `make test`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SHARED = {"tiny.py"}  # the tiny mode's sizes, imported by the benchmarks
# Their own tests, --tiny included.
TESTED_ELSEWHERE = {"gpu_check.py": "tests/test_gpu_check.py",
                    "inversion.py": "tests/test_inversion_benchmark.py"}
# Scripts that read measured runs and time nothing, so have no tiny mode: their tests run them on
# hand-made runs.
READERS = {"gan_sweep.py": "tests/test_gan_sweep.py"}

# What each benchmark's output must contain: its figures' labels.
PRINTED = {
    "per_example_grads.py": ["(a)  FeatureExtractor (outer products)", "loop/func",
                             "peak RSS of streaming features", "peak RSS of a full stand-alone"],
    "reference_models.py": ["together / one", "sequential / together",
                            "max |together - sequential|"],
    "fl_overhead.py": ["Ray start-up", "Flower first round", "steady rounds 2..2",
                       "ratio Flower / plain, excluding start-up"],
    "fl_scale.py": ["| participants | Flower s/round", "| 2 |", "| 3 |"],
    "fl_apis.py": ["legacy RecordingStrategy s/round", "Message API UploadGate(Recorder(FedAvg))",
                   "ratio Message API / legacy"],
    "parse_time.py": ["| parse quickstart.yaml |", "| import torch |",
                      "ratio parse / import torch",
                      "imported by parsing: none of torch, flwr, ray"],
}
SLOW = {"fl_overhead.py", "fl_scale.py", "per_example_grads.py", "fl_apis.py"}


def run_tiny(script: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_every_benchmark_has_a_tiny_mode_that_a_test_runs():
    scripts = {p.name for p in BENCHMARKS.glob("*.py")} - SHARED
    assert scripts == set(PRINTED) | set(TESTED_ELSEWHERE) | set(READERS)
    for script in scripts - set(READERS):
        assert '"--tiny"' in (BENCHMARKS / script).read_text(), script
    for test in TESTED_ELSEWHERE.values():
        assert "--tiny" in (ROOT / test).read_text(), test
    for script, test in READERS.items():
        assert script in (ROOT / test).read_text(), (script, test)


@pytest.mark.parametrize("script", [
    pytest.param(s, marks=[pytest.mark.slow] if s in SLOW else []) for s in PRINTED])
def test_the_benchmark_runs_in_its_tiny_mode(script):
    out = run_tiny(script)
    for label in PRINTED[script]:
        assert label in out, f"{script} printed no {label!r}:\n{out[-3000:]}"
    assert not re.search(r"\bnan\b|\binf\b", out, flags=re.IGNORECASE), out[-3000:]
