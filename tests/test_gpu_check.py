"""benchmarks/gpu_check.py on a machine without a GPU: the check itself, device cpu against cpu on
a tiny quickstart (both runs the same seed, so every difference must be exactly 0), and the
refusal of a CUDA device that is not there."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
STAGES = ["training", "features", "attack network"]


def run(*args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_vars}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)


def test_cpu_against_cpu_on_a_tiny_quickstart(tmp_path):
    out = tmp_path / "gpu-check.json"
    done = run("--device", "cpu", "--tiny", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["failed"] == []
    for device in ("cpu",):
        times = figures["times_s"][device]
        assert list(times) == STAGES
        assert all(math.isfinite(t) and t > 0 for t in times.values())
    # The same seed on the same device: the pipeline is deterministic, so nothing may differ.
    assert {k: c["difference"] for k, c in figures["checks"].items()} == {
        "features": 0.0, "round-1 global model": 0.0, "train accuracy": 0.0,
        "test accuracy": 0.0, "white-box AUC": 0.0}
    for stage in STAGES:
        assert f"| {stage} |" in done.stdout
    assert "speed-up" in done.stdout and "FAIL" not in done.stdout


def test_cuda_without_a_gpu_and_an_unknown_device_are_refused_in_one_line():
    done = run("--device", "cuda", "--tiny", CUDA_VISIBLE_DEVICES="")  # no GPU, even on one
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "CUDA is not available" in done.stderr
    done = run("--device", "tpu", "--tiny")
    assert done.returncode == 2 and "--device takes cuda, cuda:N or cpu" in done.stderr
