"""`fedattack run` without --verbose prints no library deprecation notices or FutureWarnings:
a real (tiny) Flower simulation through the command line, in a subprocess as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.fakes import tiny_data, tiny_experiment

TINY = tiny_experiment("tiny", seed=1, data=tiny_data(200, 50, num_records=2000),
                       federation={"num_participants": 2, "rounds": 1},
                       attack={"attacks": ["whitebox", "threshold-loss"], "epochs": 2,
                               "kernels": 4})


def test_run_without_verbose_shows_no_library_warnings(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "fedattack.cli", "run", str(config),
                           "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for noise in ("DEPRECATED", "FutureWarning", "SIGTERM handler is not set"):
        assert noise not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()  # the progress display's last state of each phase
    assert any(line.startswith("round") and "1/1" in line for line in lines), proc.stderr
    # feature extraction, a phase without a count, leaves no row once it ends (no "0/?")
    assert not any(line.startswith("features") for line in lines), proc.stderr
    assert any(line.startswith("whitebox epoch") and "val AUC" in line for line in lines)
    assert "target model train accuracy" in proc.stdout
