"""Ray's start is bounded (issue 11): a Ray that hangs or fails at start stops the run within
FEDATTACK_RAY_START_TIMEOUT_S with one line, exit 2, instead of hanging until killed."""

import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ray
import yaml

from fedattack import simulation
from fedattack.config import ConfigError
from fedattack.simulation import RayStartFailed, ray_start_timeout, start_ray
from tests.fakes import tiny_data, tiny_experiment


def test_a_ray_start_that_hangs_is_given_up_after_the_timeout(monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: time.sleep(3600))
    began = time.monotonic()
    with pytest.raises(RayStartFailed, match=r"Ray did not start within 0.5 s: .*ulimit -v"):
        start_ray({}, 0.5)
    assert time.monotonic() - began < 5


def test_a_ray_start_that_fails_says_why_on_one_line(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("The current node timed out during startup.\nsee the logs")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(RayStartFailed) as err:
        start_ray({}, 30)
    message = str(err.value)
    assert "RuntimeError: The current node timed out during startup. see the logs" in message
    assert "\n" not in message


@pytest.mark.parametrize("raw, expected", [(None, 120.0), ("7.5", 7.5)])
def test_timeout_from_the_environment(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv(simulation.RAY_START_TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(simulation.RAY_START_TIMEOUT_ENV, raw)
    assert ray_start_timeout() == expected


@pytest.mark.parametrize("raw", ["soon", "0", "-3", "inf", "nan"])
def test_a_bad_timeout_is_refused(monkeypatch, raw):
    monkeypatch.setenv(simulation.RAY_START_TIMEOUT_ENV, raw)
    with pytest.raises(ConfigError, match=simulation.RAY_START_TIMEOUT_ENV):
        ray_start_timeout()


EXPERIMENT = yaml.safe_dump(tiny_experiment(
    "ray-limit", data=tiny_data(100, 50, num_records=3000, nonmember=600),
    federation={"num_participants": 2, "rounds": 1}))


@pytest.mark.slow
def test_an_address_space_limit_that_stops_ray_fails_the_run_in_bounded_time(tmp_path):
    """The probe of issue 11: `ulimit -v` low enough that Ray cannot start, high enough for the
    rest (torch, the data, the splits)."""
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    limit = 3 * 2**30

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, simulation.RAY_START_TIMEOUT_ENV: "60",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    script = textwrap.dedent("""
        import sys
        from fedattack.cli import main
        sys.argv = ["fedattack", "run", "exp.yaml", "--out", "run", "--quiet"]
        main()
    """)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          preexec_fn=limited, capture_output=True, text=True, timeout=400)
    assert time.monotonic() - began < 300
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Ray did not start") and "ulimit -v" in last, last
    assert "Traceback" not in done.stderr
