"""Config validation: bad files give one line naming the field and what is accepted, exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.config import (
    AttackConfig,
    ConfigError,
    Experiment,
    experiment_yaml,
    load_experiment,
)

REPO = Path(__file__).resolve().parents[1]

BAD_FILES = {
    "unknown_key": (
        "name: x\nfederation:\n  num_participant: 4\n",
        "federation.num_participant: unknown key",
    ),
    "bad_scenario": ("scenario: centralised\n", "scenario: got 'centralised'"),
    "bad_dataset": (
        "data:\n  dataset: mnits\n",
        "data.dataset: unknown dataset 'mnits'; accepted:",
    ),
    "bad_model": ("model:\n  arch: vgg\n", "model.arch: unknown model 'vgg'; accepted:"),
    "negative_lr": ("training:\n  lr: -0.1\n", "training.lr: Input should be greater than 0"),
    "late_record_round": (
        "federation:\n  rounds: 10\n  record_rounds: [5, 20]\n",
        "record_rounds [20] exceed rounds=10",
    ),
    "unbalanced": (
        "data:\n  knowledge:\n    test_members: 10\n    test_nonmembers: 20\n",
        "evaluation sets are balanced",
    ),
    "not_a_mapping": ("- a\n- b\n", "top level must be a mapping"),
    "bad_yaml": ("name: [unclosed\n", "is not valid YAML"),
    "bad_name": ("name: 'has space'\n", "name: 'has space' is not a plain folder name"),
    "local_isolating": (
        "attacker:\n  kind: local\n  mode: isolating\n",
        "attacker: a local attacker cannot isolate",
    ),
    "isolating_everyone": (
        "attacker:\n  mode: isolating\n",
        "attacker: an isolating attacker needs targets",
    ),
    "attacker_outside_federation": (
        "federation:\n  num_participants: 3\nattacker:\n  kind: local\n  participant: 3\n",
        "attacker participants [3] do not exist; accepted: 0..2",
    ),
    "attacker_standalone": (
        "scenario: standalone\nattacker:\n  kind: global\n",
        "attacker is for the federated scenario",
    ),
    "bad_attacker_mode": ("attacker:\n  mode: sneaky\n", "attacker.mode: got 'sneaky'"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_message(tmp_path, case):
    text, expected = BAD_FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(str(path))


@pytest.mark.parametrize("case", ["unknown_key", "bad_dataset", "bad_yaml"])
def test_cli_validate_exits_2_without_traceback(tmp_path, case):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILES[case][0])
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert BAD_FILES[case][1] in result.output


def test_cli_run_bad_file_exits_2_in_a_real_process(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_FILES["bad_scenario"][0])
    proc = subprocess.run(
        [sys.executable, "-m", "fedattack.cli", "run", str(path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "scenario" in lines[0]


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_experiment(tmp_path / "absent.yaml")


def test_defaults_and_round_trip(tmp_path):
    exp = Experiment()
    assert exp.training.optimizer == "adam" and exp.training.lr == 1e-3
    assert exp.federation.local_epochs == 1
    path = tmp_path / "resolved.yaml"
    path.write_text(experiment_yaml(exp))
    assert load_experiment(path) == exp


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")))
def test_shipped_experiments_validate(path):
    result = CliRunner().invoke(app, ["validate", "--no-data", str(path)])
    assert result.exit_code == 0, result.output


def test_the_documented_experiment_file_is_valid_and_gives_the_defaults(tmp_path):
    """The annotated experiment file of docs/how-to/experiments.md documents every default; it
    must stay true."""
    readme = (REPO / "docs" / "how-to" / "experiments.md").read_text()
    example = readme.split("## The experiment file", 1)[1].split("```yaml", 1)[1]
    path = tmp_path / "readme.yaml"
    path.write_text(example.split("```", 1)[0])
    exp = load_experiment(path)
    assert exp.attack is not None
    assert exp.model_dump(exclude={"attack"}) == Experiment(name="quickstart").model_dump(
        exclude={"attack"}
    )
    assert exp.attack == AttackConfig()


def test_record_rounds():
    fed = Experiment(federation={"rounds": 10, "record_rounds": [3, 10]}).federation
    assert [r for r in range(1, 11) if fed.records(r)] == [3, 10]
    assert Experiment(federation={"record_rounds": "none"}).federation.records(1) is False


def test_defence_and_data_labels_name_what_the_run_deploys():
    from fedattack.config import Experiment

    assert Experiment().defence_label() == "none"
    exp = Experiment(privacy={"noise_multiplier": 0.5, "share_fraction": 0.1},
                     federation={"client_dp": {"clipping": "client-fixed", "clipping_norm": 2},
                                 "secure_aggregation": True},
                     data={"partition": "dirichlet", "alpha": 0.5})
    assert exp.defence_label() == ("DP-SGD z=0.5 + sparsify 10% + client DP (client-fixed) "
                                   "z=1 C=2 + SecAgg+")
    assert exp.data_label() == "dirichlet a=0.5"
