"""One Flower environment per experiment, the same in simulation and deployment."""

import os

from fedattack.deploy import DeployPaths, flower_env
from fedattack.simulation import flower_environment, flower_settings


def test_each_experiment_gets_its_own_flwr_home_and_the_callers_comes_back(tmp_path, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", "/somewhere/the/user/chose")
    monkeypatch.delenv("FLWR_DISABLE_UPDATE_CHECK", raising=False)
    seen = []
    for name in ("first", "second"):  # two experiments of one campaign, in one process
        with flower_environment(tmp_path / name):
            seen.append(os.environ["FLWR_HOME"])
            assert os.environ["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert seen == [str((tmp_path / "first").resolve() / ".flwr"),
                    str((tmp_path / "second").resolve() / ".flwr")]
    assert os.environ["FLWR_HOME"] == "/somewhere/the/user/chose"
    assert "FLWR_DISABLE_UPDATE_CHECK" not in os.environ


def test_the_environment_is_restored_when_the_run_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("FLWR_HOME", raising=False)
    try:
        with flower_environment(tmp_path):
            raise RuntimeError("a round failed")
    except RuntimeError:
        pass
    assert "FLWR_HOME" not in os.environ


def test_the_deployment_uses_the_same_settings(tmp_path):
    paths = DeployPaths(tmp_path)
    env = flower_env(paths)
    for key, value in flower_settings(paths.flwr_home).items():
        assert env[key] == value
    assert env["FLWR_HOME"] == str(tmp_path / ".flwr")
