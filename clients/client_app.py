"""The Flower ClientApp: one participant per SuperNode, its partition id from node_config."""

from __future__ import annotations

from flwr.client import ClientApp
from flwr.common import Context

from clients.honest import HonestClient
from fedattack import protocol


def make_client_app(overrides: dict | None = None) -> ClientApp:
    """A ClientApp whose run_config is completed by `overrides` (used by the simulation runner)."""

    def client_fn(context: Context):
        run_config = {**context.run_config, **(overrides or {})}
        partition_id = int(context.node_config["partition-id"])
        data_root = context.node_config.get(protocol.DATA_PATH)
        threads = run_config.get(protocol.CLIENT_THREADS)
        return HonestClient(partition_id, str(data_root) if data_root else None,
                            int(threads) if threads else None).to_client()

    return ClientApp(client_fn=client_fn)


app = make_client_app()
