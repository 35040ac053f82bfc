"""Parsing and validating an experiment or campaign YAML imports neither torch nor Flower nor Ray
(issue 26.6): the names of datasets, models and attacks, each attack's parameters and each
attack's check(exp) are read without them; what needs the data or the model stays in pre-flight.

Each check runs in a fresh interpreter: this one has imported torch (conftest.py)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "flwr", "ray")


def fresh(code: str) -> dict:
    """Run `code` in a fresh interpreter at the repository root; the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_yaml_under_experiments_parses_without_torch_flower_or_ray():
    """Through the CLI's loader, and through fedattack.config plus plan_campaign, as a notebook
    would: every experiment and campaign file, every expanded campaign item."""
    seen = fresh("""
        import json, sys
        from pathlib import Path

        from fedattack.campaign import plan_campaign
        from fedattack.cli import load_config
        from fedattack.config import is_campaign, load_experiment, load_yaml

        kinds = {}
        for path in sorted(Path("experiments").glob("*.yaml")):
            loaded = load_config(path)
            kinds[path.name] = type(loaded).__name__
            data = load_yaml(path)
            if is_campaign(data):
                plan = plan_campaign(data, path.read_text(), str(path))
                assert len(plan.items) == len(loaded.items), path
            else:
                load_experiment(path)
        print(json.dumps({"kinds": kinds, "modules": [m for m in sys.modules
                                                      if m.split(".")[0] in HEAVY]}))
        """.replace("HEAVY", repr(HEAVY)))
    assert seen["modules"] == []
    kinds = seen["kinds"]
    assert len(kinds) == len(list((ROOT / "experiments").glob("*.yaml")))
    # Both kinds of file are among them, so both paths were taken.
    assert {"Experiment", "CampaignPlan"} <= set(kinds.values()), kinds


def test_every_attack_registers_and_checks_without_torch():
    """The registry with every built-in attack: its parameters' defaults built and validated, and
    each attack's refusal (scenario, attacker, its own check) asked of stand-alone and federated
    experiments that list it, without loading torch, scipy or scikit-learn."""
    seen = fresh("""
        import json, sys

        from fedattack import attack_registry as registry
        from fedattack.config import ConfigError, parse_experiment

        federated = {"scenario": "federated", "attacker": {"kind": "global"}}
        bases = {"standalone": {"scenario": "standalone", "data": {"shadow_size": 100}},
                 "no-shadow-data": {"scenario": "standalone"},
                 "federated": {**federated, "federation": {"num_participants": 4}},
                 "two-participants": {**federated, "federation": {"num_participants": 2}}}
        outcome = {}
        for name, attack in registry.registered().items():
            if attack.params is not None:
                attack.params.model_validate(attack.params().model_dump())
            for base, data in bases.items():
                try:
                    parse_experiment({**data, "attack": {"attacks": [name]}}, "x.yaml")
                    outcome[f"{name} {base}"] = "ok"
                except ConfigError as err:
                    outcome[f"{name} {base}"] = str(err)
        print(json.dumps({"names": registry.names(), "outcome": outcome,
                          "modules": [m for m in sys.modules if m.split(".")[0] in
                                      ("torch", "flwr", "ray", "scipy", "sklearn")]}))
        """)
    assert seen["modules"] == []
    names, outcome = seen["names"], seen["outcome"]
    assert {"whitebox", "shadow", "unsupervised", "lira-offline", "rmia-online", "fedmia",
            "calibrated-whitebox-uploads", "ascent-response"} <= set(names)
    for name in names:  # each attack parses in a scenario of its own
        assert "ok" in (outcome[f"{name} standalone"], outcome[f"{name} federated"]), name
    # The refusals: declared scenarios, and the attacks' own checks (shadow's, FedMIA's).
    assert "the fedmia attack is for the federated scenario" in outcome["fedmia standalone"]
    assert "the shadow attack is for the standalone scenario" in outcome["shadow federated"]
    assert "the shadow attack needs data.shadow_size >= 4" in outcome["shadow no-shadow-data"]
    assert "the fedmia attack needs at least 2 participants besides the victim" in \
        outcome["fedmia two-participants"]
    assert outcome["whitebox two-participants"] == "ok"


def test_the_built_in_names_the_config_accepts_are_the_registries_keys():
    from fedattack.config.builtins import DATASETS, MODELS
    from fedattack.data.registry import _registry, dataset_names
    from fedattack.models import MODELS as BUILDERS
    from fedattack.models import model_names

    assert list(DATASETS) == dataset_names() == sorted(_registry())
    assert list(MODELS) == model_names() == list(BUILDERS)


def test_an_unknown_name_is_refused_with_the_accepted_ones_without_torch():
    seen = fresh("""
        import json, sys

        from fedattack.config import ConfigError, parse_experiment

        errors = []
        for data in ({"data": {"dataset": "mnits"}}, {"model": {"arch": "resnet21"}},
                     {"attack": {"attacks": ["whitebx"]}}):
            try:
                parse_experiment(data, "x.yaml")
            except ConfigError as err:
                errors.append(str(err))
        print(json.dumps({"errors": errors,
                          "torch": "torch" in sys.modules}))
        """)
    assert not seen["torch"]
    dataset, model, attack = seen["errors"]
    assert "unknown dataset 'mnits'" in dataset and "fashion-mnist" in dataset
    assert "unknown model 'resnet21'" in model and "resnet20" in model
    assert "unknown attack 'whitebx'" in attack and "did you mean 'whitebox'" in attack


def test_the_attack_package_still_exports_the_attack_network():
    """AttackNetwork (an nn.Module) is imported on first use from fedattack.attacks."""
    import fedattack.attacks as attacks
    from fedattack.attacks.network import AttackNetwork

    assert attacks.AttackNetwork is AttackNetwork
    assert "AttackNetwork" in attacks.__all__
