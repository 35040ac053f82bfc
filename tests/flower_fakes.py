"""Hand-made Flower client proxies and fit results, to drive strategies without Ray."""

from __future__ import annotations

import numpy as np
from flwr.common import Code, FitRes, GetPropertiesRes, Status, ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy


class FakeProxy(ClientProxy):
    """A client proxy that only answers which partition its node holds (what its node_config
    says: strategies.binding asks it once); strategies never call it otherwise."""

    def __init__(self, cid: str, partition=None) -> None:
        super().__init__(cid)
        self.partition = partition
        self.asked = 0

    def _never(self, *args, **kwargs):
        raise AssertionError("the strategy must not call clients directly")

    def get_properties(self, ins, timeout, group_id):
        self.asked += 1
        return GetPropertiesRes(Status(Code.OK, "ok"), {"partition_id": self.partition})

    get_parameters = fit = evaluate = reconnect = _never


def fit_res(weights: list[np.ndarray], num_examples: int, partition_id,
            metrics: dict | None = None) -> FitRes:
    """What an honest participant returns: its partition id and training loss and accuracy
    (`metrics`, if given, instead of those)."""
    if metrics is None:
        metrics = {"train_loss": 1.0, "train_accuracy": 0.5}
        if partition_id is not None:
            metrics["partition_id"] = partition_id
    return FitRes(
        status=Status(Code.OK, "ok"),
        parameters=ndarrays_to_parameters(weights),
        num_examples=num_examples,
        metrics=metrics,
    )


def client_manager(n: int, partitions=None) -> tuple[SimpleClientManager, list[FakeProxy]]:
    """`n` nodes; node i (cid 1000 + i) holds partition i, or ``partitions[i]``."""
    manager = SimpleClientManager()
    partitions = list(range(n)) if partitions is None else partitions
    proxies = [FakeProxy(str(1000 + i), p) for i, p in zip(range(n), partitions, strict=True)]
    for proxy in proxies:
        manager.register(proxy)
    return manager, proxies
