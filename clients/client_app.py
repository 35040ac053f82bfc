"""The Flower ClientApp: one participant per SuperNode, its partition id from node_config.

A node learns its role (honest, or one of the malicious participants) from the experiment the
server sends with every fit instruction, via :meth:`fedattack.config.Experiment.role_of`; the
class that plays each role is looked up in :data:`ROLES`. Whatever a role must remember across
rounds lives in the node's ``Context.state``, which Flower keeps for the node between rounds.
Each fit config is parsed once into a :class:`clients.round.RoundContext` (with this node's
``data-path``) and handed to the role.
"""

from __future__ import annotations

from flwr.client import ClientApp, NumPyClient
from flwr.common import Context, RecordDict

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
        return client.fit_round(ctx, parameters)


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

    return ClientApp(client_fn=client_fn)


app = make_client_app()
