"""Server-side wrappers around any Message-API strategy (``flwr.serverapp.strategy``: FedAvg,
FedProx, FedAdam, FedYogi, Krum, Bulyan, FedMedian, FedTrimmedAvg, the DP wrappers...), one
behaviour each, composed as Flower's ``DifferentialPrivacyServerSide*`` wrap an inner strategy:

- :class:`UploadGate`: refuses hostile replies before anything else reads them (no partition
  claimed, a partition other than the one the node first uploaded as, a partition another node
  of the round holds, tensors of the wrong names, shapes or dtypes, NaN/Inf, non-finite
  metrics, more examples than the partition holds), each in one log line and in run.json's
  ``rounds[].rejected``; it binds nodes to partitions.
- :class:`Recorder`: writes the aggregator's view (view ``global`` of the snapshot store): the
  model broadcast before round 1 (round 0), each accepted upload with its partition, and each
  round's new global model; keeps run.json (the global model's accuracy on members and
  non-members after every round).
- :class:`MaliciousAggregator`: the active global attacker of Nasr et al.: the new global model
  is moved up the loss of the target (and known) records before it is broadcast
  (fedattack.active, eq. 2), at the attacker's ascent rounds.

Order (outermost first), as :func:`audited` builds it::

    UploadGate(Recorder(MaliciousAggregator(strategy)))

The gate is outermost, so nothing hostile is recorded or aggregated; the recorder sits outside
the malice, so what it records as the round's global model is what the aggregator broadcast (the
ascended model), as fedattack's own malicious aggregator records it. A Flower DP wrapper goes
inside the recorder, ``Recorder(DifferentialPrivacyServerSideFixedClipping(FedAvg()))``: the
recorder then records the uploads *before* the server clips and noises them (the aggregator is
the one adding the noise: central DP hides nothing from it; what the DP guarantee covers is the
global models every participant receives, which the recorder records after the noise). With
client-side clipping (``fixedclipping_mod`` on the ClientApp) the uploads recorded are clipped.

Why the strategy and not the Grid. Every Message-API strategy runs in ``Strategy.start``, which
hands the round number, the model it broadcasts and the replies to the strategy's own methods;
wrapping the strategy gives the recorder the round and the *aggregate* (which no message carries:
the last round's aggregate is never sent), and lets the gate take a reply out before the inner
strategy's aggregation, without parsing rounds back from message configs. An app that drives the
Grid itself, without a strategy, is not covered (Flower's own templates all use a strategy).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedattack.protocol import FederationFailed

if TYPE_CHECKING:
    from fedattack.messageapi.audit import AuditRun

log = logging.getLogger(__name__)

PARTITION_METRIC = "partition-id"  # reply metrics: the partition the node holds (partition_mod)
CHECKED = "fedattack-gate"  # ConfigRecord the gate puts on an accepted reply: {"partition": p}
WEIGHT_METRIC = "num-examples"  # Flower's default weighted_by_key


class RejectedUpload(ValueError):
    """A reply the aggregator refuses to aggregate."""


class StrategyWrapper(Strategy):
    """A strategy that hands everything to ``inner``; subclasses override what they change."""

    def __init__(self, inner: Strategy) -> None:
        if not isinstance(inner, Strategy):
            raise TypeError(f"{type(self).__name__} wraps a flwr.serverapp.strategy.Strategy, "
                            f"not {type(inner).__name__}")
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def summary(self) -> None:
        log.info("%r", self)
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def starting(self, num_rounds: int) -> None:
        """Called on every wrapper of the chain before the first round."""

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, *args,
              **kwargs):
        strategy: Strategy = self
        while isinstance(strategy, StrategyWrapper):
            strategy.starting(num_rounds)
            strategy = strategy.inner
        return super().start(grid, initial_arrays, num_rounds, *args, **kwargs)


def _one(records, what: str):
    if len(records) != 1:
        raise RejectedUpload(f"{len(records)} {what}s, expected 1")
    return next(iter(records.values()))


def _is_integer(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


# The tensors of each reply the gate accepted, by id(reply), while the inner strategies
# aggregate it: read once, not once per wrapper (see checked_arrays).
_CHECKED_ARRAYS: dict[int, list[np.ndarray]] = {}


def checked_arrays(reply: Message) -> list[np.ndarray] | None:
    """The tensors the gate read of an accepted reply (in the ArrayRecord's order), or None."""
    return _CHECKED_ARRAYS.get(id(reply))


def check_reply(content, reference: ArrayRecord, num_partitions: int,
                partition_sizes: Sequence[int] | None = None, read: list | None = None) -> int:
    """The partition a train reply claims; RejectedUpload unless its one ArrayRecord has the
    reference's names, shapes and dtypes and is finite, and its one MetricRecord claims a
    partition in range with finite metrics and at most the partition's records as num-examples.
    The tensors read are appended to `read`, if given.
    """
    arrays = _one(content.array_records, "ArrayRecord")
    metrics = _one(content.metric_records, "MetricRecord")
    names, expected = list(arrays.keys()), list(reference.keys())
    if names != expected:
        raise RejectedUpload(f"tensors {names[:4]}{'...' if len(names) > 4 else ''} are not the "
                             f"model's ({len(expected)} tensors: {expected[:4]}...)")
    for name in expected:
        try:
            value = arrays[name].numpy()
        except Exception as err:  # any malformed payload is the participant's fault
            raise RejectedUpload(f"tensor {name!r} unreadable ({type(err).__name__})") from None
        ref = reference[name]
        if tuple(value.shape) != tuple(ref.shape) or value.dtype != np.dtype(ref.dtype):
            raise RejectedUpload(f"tensor {name!r} is {value.dtype}{list(value.shape)}, "
                                 f"expected {ref.dtype}{list(ref.shape)}")
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise RejectedUpload(f"tensor {name!r} holds NaN or Inf")
        if read is not None:
            read.append(value)
    if PARTITION_METRIC not in metrics:
        raise RejectedUpload(f"no {PARTITION_METRIC!r} in its metrics (is partition_mod on the "
                             "ClientApp?)")
    pid = metrics[PARTITION_METRIC]
    if not _is_integer(pid) or not 0 <= pid < num_partitions:
        raise RejectedUpload(f"{PARTITION_METRIC!r} is {pid!r}, not a partition "
                             f"0..{num_partitions - 1}")
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(np.isfinite(float(v)) for v in values):
            raise RejectedUpload(f"metric {key!r} is not finite")
    weight = metrics.get(WEIGHT_METRIC)
    if weight is not None and partition_sizes is not None and not (
            0 < weight <= partition_sizes[pid]):
        raise RejectedUpload(f"{WEIGHT_METRIC} {weight} outside 1..{partition_sizes[pid]}, the "
                             f"size of partition {pid}")
    return int(pid)


def checked_partition(reply: Message) -> int:
    """The partition the gate accepted a reply as."""
    if CHECKED not in reply.content.config_records:
        raise FederationFailed("a reply reached the recorder unchecked: wrap the Recorder in an "
                               "UploadGate (fedattack.messageapi.audited does)")
    return int(reply.content[CHECKED]["partition"])


class UploadGate(StrategyWrapper):
    """Refuses hostile train replies (see :func:`check_reply`) and binds each node to the
    partition it first uploaded as; the accepted replies reach ``inner`` without the partition
    metric, with the partition it was accepted as in a ConfigRecord (which strategies ignore).
    A round in which no reply is accepted fails the run (FederationFailed).

    Args:
        inner: the strategy to protect.
        num_partitions: the federation's partitions (ids 0..n-1).
        partition_sizes: each partition's training records (caps num-examples), or None.
        run: the AuditRun whose run.json lists each round's accepted partitions and refusals.
    """

    def __init__(self, inner: Strategy, num_partitions: int,
                 partition_sizes: Sequence[int] | None = None, run: AuditRun | None = None
                 ) -> None:
        super().__init__(inner)
        self.num_partitions = num_partitions
        self.partition_sizes = partition_sizes
        self.run = run
        self.partition_of: dict[int, int] = {}  # node id -> partition, from accepted replies
        self.node_of: dict[int, int] = {}  # partition -> node id
        self.reference: ArrayRecord | None = None

    def configure_train(self, server_round, arrays, config, grid):
        self.reference = arrays  # the uploads must have the broadcast model's tensors
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        accepted, rejected = self.screen(server_round, list(replies))
        if self.run is not None:
            self.run.log_round(server_round, [p for p, _ in accepted], rejected)
        if not accepted:
            reasons = "; ".join(f"node {r['node']}: {r['reason']}" for r in rejected) or "none"
            error = FederationFailed(f"round {server_round}: no upload was accepted ({reasons})")
            if self.run is not None:
                self.run.fail(error)
            raise error
        try:
            return self.inner.aggregate_train(server_round, [m for _, m in accepted])
        finally:
            for _, msg in accepted:
                _CHECKED_ARRAYS.pop(id(msg), None)

    def screen(self, server_round: int, replies: list[Message]
               ) -> tuple[list[tuple[int, Message]], list[dict]]:
        """(partition, reply) of each accepted reply, in partition order; the refusals."""
        rejected: list[dict] = []

        def refuse(node, pid, reason: str) -> None:
            log.warning("round %d: refused upload of node %s (partition %r): %s",
                        server_round, node, pid, reason)
            rejected.append({"node": node, "partition": pid, "reason": reason})

        claims: dict[int, list[tuple[int, Message]]] = {}
        present = {int(msg.metadata.src_node_id) for msg in replies}
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                refuse(node, None, f"failed: {' '.join(str(msg.error.reason).split())[:200]}")
                continue
            read: list[np.ndarray] = []
            try:
                pid = check_reply(msg.content, self.reference, self.num_partitions,
                                  self.partition_sizes, read)
            except RejectedUpload as err:
                refuse(node, None, str(err))
                continue
            bound = self.partition_of.get(node)
            if bound is not None and bound != pid:
                refuse(node, pid, f"claims partition {pid}, but it holds partition {bound}")
                continue
            holder = self.node_of.get(pid)
            if holder is not None and holder != node and holder in present:
                refuse(node, pid, f"partition {pid} is held by node {holder}")
                continue
            claims.setdefault(pid, []).append((node, msg, read))
        accepted = []
        for pid, group in sorted(claims.items()):
            if len(group) > 1:  # two new nodes claim one partition: neither can be believed
                for node, *_ in group:
                    refuse(node, pid, f"partition {pid} is claimed by {len(group)} nodes")
                continue
            node, msg, read = group[0]
            old = self.node_of.get(pid)
            if old is not None and old != node:  # a SuperNode back under a new id, its old one
                log.warning("partition %d: node %s takes over from node %s", pid, node, old)
                self.partition_of.pop(old, None)  # absent this round
            self.partition_of[node], self.node_of[pid] = pid, node
            metrics = _one(msg.content.metric_records, "MetricRecord")
            del metrics[PARTITION_METRIC]
            msg.content[CHECKED] = ConfigRecord({"partition": pid})
            _CHECKED_ARRAYS[id(msg)] = read
            accepted.append((pid, msg))
        return accepted, rejected


class Recorder(StrategyWrapper):
    """Records the aggregator's view of a run around ``inner`` (see the module docstring): the
    round-0 model, each accepted upload with its partition, each round's global model (as
    ``inner`` returns it, in the model's dtypes), and run.json's history. The replies it reads
    must have passed an :class:`UploadGate`."""

    def __init__(self, inner: Strategy, run: AuditRun) -> None:
        super().__init__(inner)
        self.run = run

    def starting(self, num_rounds: int) -> None:
        if num_rounds != self.run.rounds:
            raise FederationFailed(f"the app runs {num_rounds} rounds but the audit YAML's "
                                   f"federation.rounds is {self.run.rounds}: make them equal")

    def as_model(self, arrays: ArrayRecord) -> list[np.ndarray]:
        """The arrays in the model's order and dtypes (Flower's FedOpt strategies return
        float64, which the next round's float32 uploads would not match)."""
        names = list(arrays.keys())
        return self.in_model_order(names, [arrays[n].numpy() for n in names])

    def in_model_order(self, names: list[str], values: list[np.ndarray]) -> list[np.ndarray]:
        if names != self.run.names:
            raise FederationFailed(f"the app's model has tensors {names[:3]}..., the audit "
                                   f"YAML's model {self.run.names[:3]}...: model.factory must "
                                   "build the app's Net")
        return [_as_dtype(v, dtype) for v, dtype in zip(values, self.run.dtypes, strict=True)]

    def configure_train(self, server_round, arrays, config, grid):
        if not self.run.record["history"]:  # the initial model: round 0
            initial = self.as_model(arrays)
            self.run.write(0, [("global", None, initial)])
            self.run.evaluate(0, initial)
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = list(replies)
        uploads = []
        if self.run.records(server_round):
            for msg in replies:
                if not msg.has_error():
                    arrays = _one(msg.content.array_records, "ArrayRecord")
                    read = checked_arrays(msg)
                    weights = (self.as_model(arrays) if read is None else
                               self.in_model_order(list(arrays.keys()), read))
                    uploads.append(("upload", checked_partition(msg), weights))
        aggregate, metrics = self.inner.aggregate_train(server_round, replies)
        if aggregate is None:
            self.run.write(server_round, uploads)
            error = FederationFailed(f"round {server_round}: {self.inner!r} aggregated nothing "
                                     f"from {len(replies)} replies")
            self.run.fail(error)
            raise error
        weights = self.as_model(aggregate)
        if self.run.records(server_round):
            uploads.append(("global", None, weights))
        self.run.write(server_round, uploads)
        self.run.evaluate(server_round, weights)
        return as_record(self.run.names, weights), metrics


class MaliciousAggregator(StrategyWrapper):
    """The active global attacker around ``inner``: at the attacker's ascent rounds the new
    global model is moved up the loss of the target and known records of every victim
    (fedattack.active.GradientAscent, relative to the round's update or by the paper's gamma)
    before it is broadcast. Its steps go into run.json's ``rounds[].ascent``. Isolation is not
    implemented for the Message API (the experiment is refused)."""

    def __init__(self, inner: Strategy, run: AuditRun) -> None:
        from fedattack.active import ascended_records, ascent_for
        from fedattack.data import knowledge_of
        from fedattack.experiment import initial_model
        from fedattack.observation import aggregator_grants

        super().__init__(inner)
        grants = aggregator_grants(run.exp)
        if grants is None:
            raise FederationFailed("MaliciousAggregator: the audit YAML's attacker is not the "
                                   "aggregator (attacker.kind: global)")
        if grants.isolated:
            raise FederationFailed("MaliciousAggregator: isolation is not implemented for "
                                   "Message-API apps; use attacker.mode: gradient-ascent")
        self.run, self.attacker, self.start_of = run, run.exp.attacker, {}
        self.ascent = None
        if grants.ascends:
            splits = run.splits
            records = ascended_records(knowledge_of(splits, v.name) for v in splits.victims)
            x, y = run.dataset.batch(records)
            self.ascent = ascent_for(initial_model(run.exp, run.dataset), x, y, self.attacker)

    def configure_train(self, server_round, arrays, config, grid):
        self.start_of = {server_round: arrays}  # the relative step's reference
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        aggregate, metrics = self.inner.aggregate_train(server_round, replies)
        if aggregate is None or self.ascent is None or not self.attacker.ascends(server_round):
            return aggregate, metrics
        names = list(aggregate.keys())
        start = self.start_of[server_round]
        weights = [aggregate[n].numpy() for n in names]
        moved = self.ascent(weights, [start[n].numpy() for n in names])
        moved = [_as_dtype(m, w.dtype) for m, w in zip(moved, weights, strict=True)]
        if self.run.record["rounds"] and self.run.record["rounds"][-1]["round"] == server_round:
            self.run.record["rounds"][-1]["ascent"] = {"global": dict(self.ascent.last)}
        return as_record(names, moved), metrics


def as_record(names: Sequence[str], arrays: Sequence[np.ndarray]) -> ArrayRecord:
    return ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in
                        zip(names, arrays, strict=True)})


def _as_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if array.dtype == dtype:
        return array
    return np.rint(array).astype(dtype) if dtype.kind in "iu" else array.astype(dtype)


def audited(strategy: Strategy, context, members) -> Strategy:
    """``strategy`` gated, recorded and (when the audit YAML's attacker is an active aggregator)
    malicious, for the run the app's run_config names (``fedattack-config``,
    ``fedattack-run-dir``); ``members``: each partition's training record indices, or
    ``(partition, num_partitions) -> indices`` (the ground truth, from the app's own
    partitioning: fedattack.messageapi.audit.audited_experiment)."""
    from fedattack.messageapi.audit import AuditRun, audit_paths

    config, run_dir = audit_paths(context.run_config)
    run = AuditRun.from_files(config, run_dir, members)
    attacker = run.exp.attacker
    if attacker is not None and attacker.kind == "global" and attacker.active:
        strategy = MaliciousAggregator(strategy, run)
    return UploadGate(Recorder(strategy, run), num_partitions=len(run.partition_sizes),
                      partition_sizes=run.partition_sizes, run=run)
