"""SecAgg+ settings the federation cannot meet are refused by `validate` (issue 25, item 3).

`fedattack validate` must accept exactly the `federation.secure_aggregation` settings that
Flower 1.42's SecAggPlusWorkflow accepts when it is built and that let its setup stage go on
for the number of participants sampled each round: the test drives Flower's own
``_check_init_params`` and ``setup_stage`` (over a fake grid whose nodes answer with keys) for a
grid of settings and compares. Flower refuses the others in its own parameter names at run time,
or logs "Insufficient available nodes" every round and aggregates nothing.
"""

import itertools
from types import SimpleNamespace

import pytest
import yaml
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.common import FitIns, Parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.config import ConfigError, SecAggConfig, parse_experiment

SHARES = [1, 3, 4, 5, 7, 100, 0.2, 0.5, 1.0, 1.5]
THRESHOLDS = [1, 2, 3, 4, 5, 0.1, 0.5, 0.9, 1.0]
SAMPLED = [2, 3, 4, 6, 7]


def flower_context(sampled: int) -> SimpleNamespace:
    """What setup_stage reads of a LegacyContext: the round, the parameters, the strategy's
    sample of `sampled` nodes."""
    fitins = FitIns(Parameters(tensors=[], tensor_type="numpy.ndarray"), {})
    state = RecordDict({MAIN_CONFIGS_RECORD: ConfigRecord({WorkflowKey.CURRENT_ROUND: 1}),
                        MAIN_PARAMS_RECORD: ArrayRecord()})
    strategy = SimpleNamespace(configure_fit=lambda *_: [
        (SimpleNamespace(node_id=node), fitins) for node in range(1, sampled + 1)])
    return SimpleNamespace(state=state, strategy=strategy,
                           client_manager=SimpleNamespace(num_available=lambda: sampled))


class KeysGrid:
    """A grid whose every node answers the setup stage with a pair of public keys."""

    def send_and_receive(self, messages, timeout=None):
        return [SimpleNamespace(
            metadata=SimpleNamespace(src_node_id=m.metadata.dst_node_id),
            has_error=lambda: False,
            content=RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({
                Key.PUBLIC_KEY_1: b"pk1-%d" % m.metadata.dst_node_id,
                Key.PUBLIC_KEY_2: b"pk2-%d" % m.metadata.dst_node_id})}),
        ) for m in messages]


def flower_verdict(shares, threshold, sampled: int) -> tuple[int, int] | str:
    """(shares, threshold) Flower's setup stage resolved, or why Flower refused the settings:
    "init" (the workflow's constructor) or "aborted" (no node reaches the threshold)."""
    try:
        workflow = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=threshold)
    except ValueError:
        return "init"
    state = WorkflowState()
    if not workflow.setup_stage(KeysGrid(), flower_context(sampled), state):
        return "aborted"
    return state.num_shares, state.threshold


def our_verdict(shares, threshold, sampled: int) -> tuple[int, int] | str:
    federation = {"num_participants": sampled, "secure_aggregation": {
        "num_shares": shares, "reconstruction_threshold": threshold}}
    try:
        config = SecAggConfig(num_shares=shares, reconstruction_threshold=threshold)
    except ValueError:
        return "init"
    try:
        parse_experiment({"federation": federation})
    except ConfigError:
        return "aborted"
    count, needed, _ = config.resolved(sampled)
    return count, needed


@pytest.fixture
def server_task(monkeypatch):
    """The identity of a ServerApp's task, which Flower's Message constructor reads."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.mark.parametrize("shares", SHARES)
def test_validate_accepts_what_flowers_secagg_plus_runs(server_task, shares):
    differ = []
    for threshold, sampled in itertools.product(THRESHOLDS, SAMPLED):
        ours, flowers = our_verdict(shares, threshold, sampled), flower_verdict(
            shares, threshold, sampled)
        if ours != flowers:
            differ.append((threshold, sampled, ours, flowers))
    assert differ == []


CANNOT_MEET = {  # federation block -> the key and a phrase of the one-line message
    "threshold 5 of 3": ({"num_participants": 3,
                          "secure_aggregation": {"reconstruction_threshold": 5}},
                         "federation.secure_aggregation.reconstruction_threshold: SecAgg+ would "
                         "need 5 participants"),
    "100 shares of 3": ({"num_participants": 3, "secure_aggregation": {"num_shares": 100}},
                        "federation.secure_aggregation.num_shares: SecAgg+ would need 50"),
    "threshold 4 of 3 sampled": ({"num_participants": 10, "clients_per_round": 3,
                                  "secure_aggregation": {"num_shares": 5,
                                                         "reconstruction_threshold": 4}},
                                 "only 3 can hold them with 3 participants sampled a round"),
    "modulus below quantization": ({"num_participants": 3,
                                    "secure_aggregation": {"modulus_range": 16}},
                                   "federation.secure_aggregation.modulus_range: 16 must exceed "
                                   "quantization_range 4194304"),
    "modulus not a power of 2": ({"num_participants": 3,
                                  "secure_aggregation": {"modulus_range": 3000,
                                                         "quantization_range": 100}},
                                 "modulus_range: 3000 is not a power of 2"),
    "sum overflows the modulus": ({"num_participants": 20,
                                   "secure_aggregation": {"modulus_range": 2**26}},
                                  "modulus_range: 67108864 cannot hold the sum of 20 "
                                  "participants' values"),
    "two shares": ({"num_participants": 3, "secure_aggregation": {"num_shares": 2}},
                   "num_shares: 2 is refused by SecAgg+"),
    "one sampled": ({"num_participants": 5, "clients_per_round": 1,
                     "secure_aggregation": True},
                    "federation.secure_aggregation needs at least 2 participants per round"),
}


@pytest.mark.parametrize("case", sorted(CANNOT_MEET))
def test_settings_the_federation_cannot_meet_are_refused_in_one_line(tmp_path, case):
    federation, phrase = CANNOT_MEET[case]
    config = tmp_path / "secagg.yaml"
    config.write_text(yaml.safe_dump({"name": "secagg", "federation": federation}))
    result = CliRunner().invoke(app, ["validate", str(config), "--no-data"])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {config}: ") and phrase in line, line
