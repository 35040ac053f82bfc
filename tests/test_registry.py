"""The attack registry: the config's accepted names, the dispatch, the knowledge column and the
checks come from one declaration per attack; a new attack is one module and one line."""

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fedattack import attack_registry as registry
from fedattack.attack_registry import register
from fedattack.cli import app
from fedattack.config import ConfigError, attack_names, parse_experiment
from fedattack.io import read_json
from fedattack.runner import run_experiment

TINY = {
    "name": "tiny", "seed": 3, "scenario": "standalone",
    "data": {"dataset": "purchase100-synth", "num_records": 600, "train_size": 100,
             "nonmember_size": 200,
             "knowledge": {"train_members": 40, "train_nonmembers": 40, "test_members": 40,
                           "test_nonmembers": 40}},
    "training": {"epochs": 2},
}


PLUGINS = Path(__file__).parent / "plugins"  # outside the package: a user's attack module
TOY = "fedattack_toy"


def forget_plugin(module: str, *attacks: str) -> None:
    """Unregister a plug-in's attacks and drop its module, so a later import registers them
    again."""
    for name in attacks:
        registry.unregister(name)
    sys.modules.pop(module, None)


@pytest.fixture
def clean_path(monkeypatch):
    """sys.path as it was before the test (parsing python_path extends it)."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def toy(clean_path):
    """The toy attack of tests/plugins/fedattack_toy, registered by `attack.plugins`."""
    yield
    forget_plugin(TOY, "toy")


def toy_params(**given):
    return sys.modules[TOY].ToyParams(**given)


def experiment(**attack):
    return parse_experiment({**TINY, "attack": attack})


def with_toy(**attack):
    """An experiment whose attack block loads the toy plug-in from tests/plugins."""
    return parse_experiment({**TINY, "python_path": [str(PLUGINS)],
                             "attack": {"plugins": [TOY], **attack}})


def test_the_config_accepts_exactly_the_registered_attacks():
    assert attack_names() == list(registry.registered())
    assert {"whitebox", "blackbox", "shadow", "threshold-loss", "lira-offline",
            "rmia-online"} <= set(attack_names())
    with pytest.raises(ConfigError, match="unknown attack 'whitebx'; did you mean 'whitebox'"):
        experiment(attacks=["whitebx"])


def test_every_attack_declares_its_knowledge_and_a_description():
    for name, attack in registry.registered().items():
        assert attack.name == name and attack.knowledge in registry.KNOWLEDGE, name
        assert attack.description and callable(attack.run), name


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="already registered"):
        register("whitebox", knowledge="supervised", description="again")(lambda ctx: None)
    with pytest.raises(ValueError, match="knowledge 'telepathy'"):
        register("psychic", knowledge="telepathy", description="no")
    assert "psychic" not in registry.registered()


def test_an_attack_plugin_outside_the_package_runs_end_to_end(toy, tmp_path):
    exp = with_toy(attacks=["toy", "threshold-loss"], toy={"strength": 2.5})
    assert exp.attack.params("toy") == toy_params(strength=2.5)
    _, results = run_experiment(exp, tmp_path / "run", show_progress=False)
    rows = {r["attack"]: r for r in results}
    assert rows["toy"]["knowledge"] == "supervised" and rows["toy"]["features"] == "loss"
    # a positive scaling of the loss threshold's scores ranks the targets the same way
    assert rows["toy"]["auc"] == pytest.approx(rows["threshold-loss"]["auc"])
    scores = np.load(tmp_path / "run" / "attacks" / "toy-scores.npy")
    loss = np.load(tmp_path / "run" / "attacks" / "threshold-loss-scores.npy")
    np.testing.assert_allclose(scores, 2.5 * loss)
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["attack"]["toy"] == {"strength": 2.5}
    assert [r["attack"] for r in read_json(tmp_path / "run" / "results.json")] == \
        ["toy", "threshold-loss"]


def test_an_attacks_parameters_are_validated_by_its_own_model(toy):
    assert with_toy(attacks=["toy"]).attack.params("toy") == toy_params()  # defaults spelt out
    with pytest.raises(ConfigError, match="strength"):
        with_toy(attacks=["toy"], toy={"strength": -1})
    with pytest.raises(ConfigError, match="attack.toy: parameters of an attack not in"):
        with_toy(attacks=["whitebox"], toy={"strength": 2})
    with pytest.raises(ConfigError, match="attack.tyo: unknown key; did you mean 'toy'"):
        with_toy(attacks=["toy"], tyo={"strength": 2})


def test_without_its_plugin_the_toy_attack_is_unknown(toy):
    with pytest.raises(ConfigError, match="attack.attacks.0: unknown attack 'toy'"):
        experiment(attacks=["toy"])


def test_a_plugin_that_does_not_import_is_one_line_naming_attack_plugins(clean_path, tmp_path):
    with pytest.raises(ConfigError, match=r"^config: attack.plugins: cannot import module "
                                          r"'no_such_plugin' .*python_path$"):
        parse_experiment({**TINY, "attack": {"plugins": ["no_such_plugin"]}})
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('half written')\n")
    with pytest.raises(ConfigError, match="attack.plugins: importing 'broken_plugin' failed "
                                          r"\(RuntimeError: half written\)"):
        parse_experiment({**TINY, "python_path": [str(tmp_path)],
                          "attack": {"plugins": ["broken_plugin"]}})


def write_distribution(site: Path, name: str, module: str, source: str) -> None:
    """An installed distribution in folder `site`: module `module` and a dist-info whose
    entry point of group fedattack.attacks names it (what `pip install` of a package declaring
    ``[project.entry-points."fedattack.attacks"]`` leaves)."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fedattack.attacks]\n{name} = {module}\n")


@pytest.fixture
def reload_entry_points(clean_path, monkeypatch):
    """The registry reads the entry points again (and forgets what it read) around the test."""
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    yield
    registry._builtins_loaded = False
    registry._plugins_failed = None


def test_an_installed_entry_point_registers_its_attack(reload_entry_points, tmp_path, monkeypatch):
    source = (PLUGINS / TOY / "__init__.py").read_text().replace('"toy"', '"toy-ep"')
    write_distribution(tmp_path, "toy-entry", "toy_entry", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "toy-ep" in registry.names()
        exp = parse_experiment({**TINY, "attack": {"attacks": ["toy-ep"]}})
        assert exp.attack.attacks == ["toy-ep"]
    finally:
        forget_plugin("toy_entry", "toy-ep")


def test_an_entry_point_that_raises_is_one_line_naming_it(reload_entry_points, tmp_path,
                                                          monkeypatch):
    write_distribution(tmp_path, "bad-attacks", "bad_attacks", "import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({**TINY, "attack": {"attacks": ["threshold-loss"]}}))
    result = CliRunner().invoke(app, ["validate", str(config), "--no-data"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "attack.attacks.0: the attack plug-in 'bad-attacks' = 'bad_attacks' (entry point of " \
           "group fedattack.attacks) raised ModuleNotFoundError: No module named " \
           "'no_such_dependency'" in lines[0]


def test_shadow_in_a_federated_experiment_is_refused_at_validate_time(tmp_path):
    config = tmp_path / "fed-shadow.yaml"
    config.write_text(yaml.safe_dump({
        **TINY, "scenario": "federated", "data": {**TINY["data"], "shadow_size": 100},
        "federation": {"num_participants": 2, "rounds": 1}, "attack": {"attacks": ["shadow"]}}))
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    phrase = "the shadow attack is for the standalone scenario, not 'federated'"
    assert len(lines) == 1 and phrase in lines[0], result.output


def test_an_attacks_own_check_runs_at_validate_time():
    with pytest.raises(ConfigError,
                       match=r"the shadow attack needs data.shadow_size >= 4 records \(got 0"):
        parse_experiment({**TINY, "data": {**TINY["data"], "shadow_size": 0},
                          "attack": {"attacks": ["shadow"]}})


def test_an_attack_for_one_attacker_is_refused_for_another():
    register("aggregator-only", knowledge="observed", attackers=("global",),
             description="a test's attack that reads every participant's uploads")(lambda c: None)
    try:
        with pytest.raises(ConfigError, match="the aggregator-only attack is for the global "
                                              "attacker, not the standalone one"):
            experiment(attacks=["aggregator-only"])
    finally:
        registry.unregister("aggregator-only")
