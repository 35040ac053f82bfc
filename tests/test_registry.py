"""The attack registry: the config's accepted names, the dispatch, the knowledge column and the
checks come from one declaration per attack; a new attack is one module and one line."""

import numpy as np
import pytest
import yaml
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from fedattack import attack_registry as registry
from fedattack.attack_registry import AttackOutcome, register
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


class ToyParams(BaseModel):
    model_config = {"extra": "forbid"}
    strength: float = Field(default=1.0, gt=0)


@pytest.fixture
def toy():
    """A toy attack registered from this test module alone: -strength * loss of each target."""

    @register("toy", knowledge="supervised", params=ToyParams,
              description="a test's attack: the loss threshold's scores, scaled")
    def run_toy(ctx) -> AttackOutcome:
        strength = ctx.cfg.params("toy").strength
        return AttackOutcome("toy", "loss", strength * ctx.loss_scores(ctx.knowledge.targets))

    yield run_toy
    registry.unregister("toy")


def experiment(**attack):
    return parse_experiment({**TINY, "attack": attack})


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


def test_a_toy_attack_registered_by_a_test_runs_end_to_end(toy, tmp_path):
    exp = experiment(attacks=["toy", "threshold-loss"], toy={"strength": 2.5})
    assert exp.attack.params("toy") == ToyParams(strength=2.5)
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
    assert experiment(attacks=["toy"]).attack.params("toy") == ToyParams()  # defaults spelt out
    with pytest.raises(ConfigError, match="strength"):
        experiment(attacks=["toy"], toy={"strength": -1})
    with pytest.raises(ConfigError, match="attack.toy: parameters of an attack not in"):
        experiment(attacks=["whitebox"], toy={"strength": 2})
    with pytest.raises(ConfigError, match="attack.tyo: unknown key; did you mean 'toy'"):
        experiment(attacks=["toy"], tyo={"strength": 2})


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
