"""The aggregation rule the recording and malicious aggregators wrap: Flower's strategies by name.

``federation.strategy`` names one (fedattack.config.StrategyConfig). FedAvg is `OrderedFedAvg`:
Flower's FedAvg whose average is taken in float64 over the uploads in the order it is given them
(the recorder orders them by partition id), so the same seed gives bit-identical models; Flower's
own FedAvg sums in the tensors' dtype. The others are Flower's classes as they are: FedAvgM,
FedProx (which sends ``proximal_mu`` to the clients), FedAdam, FedYogi, FedAdagrad.
"""

from __future__ import annotations

import numpy as np
from flwr.common import FitRes, NDArrays, Parameters, Scalar
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
)

from fedattack.config import StrategyConfig
from strategies.wrapper import arrays_of, to_parameters


def weighted_average(uploads: list[tuple[NDArrays, int]]) -> NDArrays:
    """FedAvg of (weights, num_examples) pairs, in the given order, in float64.

    Integer tensors (e.g. BatchNorm's num_batches_tracked) are rounded back to their dtype.
    """
    total = sum(n for _, n in uploads)
    averaged = []
    for layer in zip(*(w for w, _ in uploads), strict=True):
        acc = np.zeros(layer[0].shape, dtype=np.float64)
        for tensor, (_, n) in zip(layer, uploads, strict=True):  # one temporary per tensor
            acc += np.multiply(tensor, n / total, dtype=np.float64)
        dtype = layer[0].dtype
        averaged.append(np.rint(acc).astype(dtype) if dtype.kind in "iu" else acc.astype(dtype))
    return averaged


class OrderedFedAvg(FedAvg):
    """FedAvg averaging in float64, in the order of ``results`` (see `weighted_average`)."""

    def __repr__(self) -> str:
        return "OrderedFedAvg()"

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list,
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if not results:
            return None, {}
        uploads = [(arrays_of(res.parameters), res.num_examples) for _, res in results]
        return to_parameters(weighted_average(uploads)), {}


STRATEGIES: dict[str, type[FedAvg]] = {
    "fedavg": OrderedFedAvg,
    "fedavgm": FedAvgM,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}


def no_metrics(_metrics: list) -> dict[str, Scalar]:
    """Fit metrics are the recorder's business (run.json), not the inner strategy's."""
    return {}


def inner_strategy(config: StrategyConfig | str = "fedavg", **kwargs) -> Strategy:
    """The Flower strategy `config` names, with `kwargs` (FedAvg's: initial_parameters,
    on_fit_config_fn, evaluate_fn, fraction_fit, min_fit_clients, ...) and its own parameters."""
    config = StrategyConfig.model_validate(config)
    kwargs.setdefault("fraction_evaluate", 0.0)
    kwargs.setdefault("accept_failures", True)
    kwargs.setdefault("fit_metrics_aggregation_fn", no_metrics)
    return STRATEGIES[config.name](**kwargs, **config.options())
