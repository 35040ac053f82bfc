"""Hand-made Flower client proxies and fit results, to drive strategies without Ray."""

from __future__ import annotations

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy


class FakeProxy(ClientProxy):
    """A client proxy that is never called: strategies only read its cid."""

    def _never(self, *args, **kwargs):
        raise AssertionError("the strategy must not call clients directly")

    get_properties = get_parameters = fit = evaluate = reconnect = _never


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


def client_manager(n: int) -> tuple[SimpleClientManager, list[FakeProxy]]:
    manager = SimpleClientManager()
    proxies = [FakeProxy(str(1000 + i)) for i in range(n)]
    for proxy in proxies:
        manager.register(proxy)
    return manager, proxies
