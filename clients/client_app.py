"""The Flower ClientApp: one participant per SuperNode, its partition id from node_config.

A node learns its role (honest, or one of the malicious participants) from the experiment the
server sends with every fit instruction, via :meth:`fedattack.config.Experiment.role_of`; the
class that plays each role is looked up in :data:`ROLES`. Whatever a role must remember across
rounds lives in the node's ``Context.state``, which Flower keeps for the node between rounds.
Each fit config is parsed once into a :class:`clients.round.RoundContext` (with this node's
``data-path``) and handed to the role.

Two of Flower's mods run around every participant, each only when the server asks for it: under
secure aggregation the server's SecAgg+ workflow drives ``secaggplus_mod`` (its messages carry
the protocol's stage), and under client-side client-level DP the fit config names the clipping
(``fixedclipping_mod`` or ``adaptiveclipping_mod``, which clip the update before it is masked).
"""

from __future__ import annotations

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import adaptiveclipping_mod, fixedclipping_mod, secaggplus_mod
from flwr.common import Context, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat

from clients.gan_attacker import GanAttacker
from clients.honest import HonestClient
from clients.local_attacker import LocalAttacker
from clients.round import RoundContext
from fedattack import protocol

ROLES: dict[str, type[HonestClient]] = {
    "honest": HonestClient,
    "gan-attacker": GanAttacker,
    "local-attacker": LocalAttacker,
}


class Participant(NumPyClient):
    """Plays this node's role in the experiment: builds the role's client at each fit."""

    def __init__(self, partition_id: int, data_root: str | None, threads: int | None,
                 state: RecordDict, run_dir: str | None = None) -> None:
        self.partition_id, self.data_root, self.threads, self.state = (
            partition_id, data_root, threads, state)
        self.run_dir = run_dir

    def get_properties(self, config) -> dict:
        """The partition this node holds, which the aggregator samples participants by."""
        return {protocol.PARTITION_ID: self.partition_id}

    def fit(self, parameters, config):
        ctx = RoundContext.parse(config, self.partition_id, self.data_root)
        role = ROLES[ctx.exp.role_of(self.partition_id)]
        client = role(self.partition_id, self.data_root, self.threads, state=self.state,
                      run_dir=self.run_dir)
        weights, num_examples, metrics = client.fit_round(ctx, parameters)
        fed = ctx.exp.federation
        if fed.client_dp is not None:  # DP-FedAvg averages uniformly: every participant weighs 1
            num_examples = 1
        if fed.secure_aggregation is not None:  # SecAgg+ rounds stochastically, from numpy's
            # global generator: seeded per participant and round, the same seed gives the same run
            np.random.seed((ctx.exp.seed * 1_000_003 + ctx.server_round * 1_009
                            + self.partition_id) % 2**32)
        return weights, num_examples, metrics


def make_client_app(overrides: dict | None = None) -> ClientApp:
    """A ClientApp whose run_config is completed by `overrides` (used by the simulation runner)."""

    def client_fn(context: Context):
        run_config = {**context.run_config, **(overrides or {})}
        partition_id = int(context.node_config["partition-id"])
        data_root = context.node_config.get(protocol.DATA_PATH)
        threads = run_config.get(protocol.CLIENT_THREADS)
        run_dir = run_config.get(protocol.RUN_DIR)
        return Participant(partition_id, str(data_root) if data_root else None,
                           int(threads) if threads else None, context.state,
                           str(run_dir) if run_dir else None).to_client()

    return ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod, client_clipping_mod])


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next) -> Message:
    """Flower's ``secaggplus_mod`` for the messages of a SecAgg+ round; others pass through."""
    if (msg.metadata.message_type == MessageType.TRAIN
            and RECORD_KEY_CONFIGS in msg.content.config_records):
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def client_clipping_mod(msg: Message, ctxt: Context, call_next) -> Message:
    """Flower's ``fixedclipping_mod`` or ``adaptiveclipping_mod``, as the fit config names
    (``protocol.CLIENT_CLIPPING``: client-side client-level DP); otherwise nothing."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    config = recorddict_compat.recorddict_to_fitins(msg.content, keep_input=True).config
    mode = config.get(protocol.CLIENT_CLIPPING)
    if mode == "fixed":
        return fixedclipping_mod(msg, ctxt, call_next)
    if mode == "adaptive":
        return adaptiveclipping_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = make_client_app()
