"""FedAvg that records what the aggregator observes: the global attacker's view.

For every round listed in the config it writes, into the snapshot store's "global" view, the model
it broadcast, each participant's upload and the new aggregate. Aggregation is done here rather
than by Flower's ``aggregate_inplace`` for two reasons: results are averaged in partition order, so
the same seed gives bit-identical models whatever order clients answer in; and every upload is
checked (shapes, finiteness) before it can poison the average.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.common import (
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from fedattack.protocol import PARTITION_ID
from fedattack.snapshots import SnapshotStore

log = logging.getLogger(__name__)

VIEW = "global"


class RejectedUpload(ValueError):
    """An upload the aggregator refuses to average (wrong shapes, NaN/Inf, no partition id)."""


@dataclass
class RoundLog:
    """What happened to each participant in a round, kept for run.json."""

    server_round: int
    accepted: list[int] = field(default_factory=list)
    rejected: dict[int | str, str] = field(default_factory=dict)
    metrics: dict[int, dict] = field(default_factory=dict)  # each accepted upload's fit metrics
    ascent: dict[str, dict] = field(default_factory=dict)  # an active aggregator's steps


def weighted_average(uploads: list[tuple[NDArrays, int]]) -> NDArrays:
    """FedAvg of (weights, num_examples) pairs, in the given order, in float64.

    Integer tensors (e.g. BatchNorm's num_batches_tracked) are rounded back to their dtype.
    """
    total = sum(n for _, n in uploads)
    averaged = []
    for layer in zip(*(w for w, _ in uploads), strict=True):
        acc = np.zeros(layer[0].shape, dtype=np.float64)
        for tensor, (_, n) in zip(layer, uploads, strict=True):
            acc += tensor.astype(np.float64) * (n / total)
        dtype = layer[0].dtype
        averaged.append(np.rint(acc).astype(dtype) if dtype.kind in "iu" else acc.astype(dtype))
    return averaged


def check_upload(weights: NDArrays, reference: NDArrays) -> None:
    """Raise RejectedUpload unless weights match the reference shapes and are all finite."""
    if len(weights) != len(reference):
        raise RejectedUpload(f"{len(weights)} tensors, expected {len(reference)}")
    for i, (w, ref) in enumerate(zip(weights, reference, strict=True)):
        if w.shape != ref.shape:
            raise RejectedUpload(f"tensor {i} has shape {w.shape}, expected {ref.shape}")
        if w.dtype.kind == "f" and not np.isfinite(w).all():
            raise RejectedUpload(f"tensor {i} holds NaN or Inf")


class RecordingFedAvg(FedAvg):
    """FedAvg over all participants each round, recording the aggregator's observations.

    Args:
        store: where observations are written (view "global").
        record_round: which rounds to record.
        weight_names: tensor names of the model, in the order of Flower's parameter list.
        fit_config: ``round -> config`` sent to every participant (learning rate, epochs...).
        on_round: called after each aggregation with (round, RoundLog).
        kwargs: passed to FedAvg (initial_parameters, evaluate_fn, min clients...).
    """

    def __init__(
        self,
        *,
        store: SnapshotStore,
        record_round: Callable[[int], bool],
        weight_names: list[str],
        fit_config: Callable[[int], dict[str, Scalar]],
        on_round: Callable[[int, RoundLog], None] | None = None,
        **kwargs,
    ) -> None:
        kwargs.setdefault("fraction_evaluate", 0.0)
        kwargs.setdefault("accept_failures", True)
        super().__init__(on_fit_config_fn=fit_config, **kwargs)
        self.store = store
        self.record_round = record_round
        self.weight_names = weight_names
        self.on_round = on_round
        self.round_logs: list[RoundLog] = []
        self._broadcast: NDArrays | None = None

    def __repr__(self) -> str:
        return f"RecordingFedAvg(accept_failures={self.accept_failures})"

    # -- recording -------------------------------------------------------------------------

    def record(self, kind: str, server_round: int, weights: NDArrays, partition=None) -> None:
        """Write one observation unless this (kind, round, partition) is already on disk."""
        if self.store.records(view=VIEW, kind=kind, round=server_round, partition=partition):
            return
        named = list(zip(self.weight_names, weights, strict=True))
        self.store.write(VIEW, kind, server_round, named,
                         partition=partition)

    # -- Flower hooks ----------------------------------------------------------------------

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Send the current global model to every participant; record it as global round-1."""
        self._broadcast = parameters_to_ndarrays(parameters)
        if self.record_round(server_round):
            self.record("global", server_round - 1, self._broadcast)
        return super().configure_fit(server_round, parameters, client_manager)

    def accept(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], log_: RoundLog):
        """Validate uploads; return [(partition, weights, num_examples)] sorted by partition."""
        accepted = []
        for proxy, res in results:
            pid = res.metrics.get(PARTITION_ID)
            try:
                if not isinstance(pid, int):
                    raise RejectedUpload(f"no integer {PARTITION_ID!r} in the fit metrics")
                weights = parameters_to_ndarrays(res.parameters)
                check_upload(weights, self._broadcast)
            except (RejectedUpload, ValueError) as err:
                who = pid if isinstance(pid, int) else f"node {proxy.cid}"
                log.warning("round %d: refused upload of participant %s: %s",
                            server_round, who, err)
                log_.rejected[who] = str(err)
                continue
            accepted.append((pid, weights, res.num_examples))
            log_.accepted.append(pid)
            log_.metrics[pid] = dict(res.metrics)
        accepted.sort(key=lambda item: item[0])
        log_.accepted.sort()
        return accepted

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Record uploads, then average the accepted ones in partition order."""
        round_log = RoundLog(server_round)
        for failure in failures:
            round_log.rejected[f"failure-{len(round_log.rejected)}"] = repr(failure)
        accepted = self.accept(server_round, results, round_log)
        self.round_logs.append(round_log)
        recording = self.record_round(server_round)
        if recording:
            for pid, weights, _ in accepted:
                self.record("upload", server_round, weights, partition=pid)
        if not accepted:
            log.warning("round %d: no acceptable upload; the global model is unchanged",
                        server_round)
            if self.on_round:
                self.on_round(server_round, round_log)
            return None, {}
        aggregate = self.aggregate(server_round, accepted)
        if recording:
            self.record("global", server_round, aggregate)
        if self.on_round:
            self.on_round(server_round, round_log)
        return ndarrays_to_parameters(aggregate), {"accepted": len(accepted)}

    def aggregate(self, server_round: int, accepted: list[tuple[int, NDArrays, int]]) -> NDArrays:
        """The new global model; subclasses (malicious aggregators) hook in here."""
        return weighted_average([(w, n) for _, w, n in accepted])
