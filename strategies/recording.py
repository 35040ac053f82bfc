"""The recording aggregator: any Flower strategy, wrapped so that it records what the aggregator
observes (the global attacker's view), as Flower's DP strategies wrap an inner one.

For every round listed in the config it writes, into the snapshot store's "global" view, the model
it broadcast, each participant's upload and the new aggregate. Every upload is checked (partition
id, example count, metrics, shapes, finiteness) before the inner strategy sees it, and the
accepted ones are handed to the inner strategy in partition order, so the same seed gives
bit-identical models whatever order clients answer in (strategies.inner.OrderedFedAvg).

Under secure aggregation (Flower's SecAggPlusWorkflow drives the round) the aggregator never
holds an upload: the workflow hands every participant's result with the unmasked *sum* of the
round's masked uploads in place of its parameters. The recorder then records the broadcast and
the aggregate only, checks each participant's cleartext metrics and example count, and checks the
aggregate as a whole; a participant whose metrics are refused is listed as refused, but its
masked upload is in the sum (no secure aggregation can take one out: the price of not seeing
uploads is not being able to vet them).
"""

from __future__ import annotations

import errno
import logging
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from flwr.common import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedattack.protocol import PARTITION_ID, FederationFailed
from fedattack.snapshots import GLOBAL_VIEW, Snapshot, SnapshotStore
from fedattack.usercode import user_code_failure
from strategies.binding import BindingConflict, PartitionBinding
from strategies.inner import OrderedFedAvg, inner_strategy, weighted_average

log = logging.getLogger(__name__)

VIEW = GLOBAL_VIEW  # the aggregator's observations


class RejectedUpload(ValueError):
    """An upload the aggregator refuses to average (wrong shapes, NaN/Inf, no partition id)."""


@dataclass
class RoundLog:
    """What happened to each participant in a round, kept for run.json.

    ``rejected`` lists each refusal as ``{"node", "partition", "bound", "reason"}``;
    ``partition`` is the id the upload claimed (None when it claimed none, or a Flower failure
    carried no reply), ``bound`` the partition its node is bound to (strategies.binding; None
    for a node bound to none).
    """

    server_round: int
    accepted: list[int] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    metrics: dict[int, dict] = field(default_factory=dict)  # each accepted upload's fit metrics
    ascent: dict[str, dict] = field(default_factory=dict)  # an active aggregator's steps

    def refuse(self, node: str | None, partition, reason: str, bound: int | None = None) -> None:
        """`partition`: the one the upload claimed; `bound`: the one its node is bound to."""
        log.warning("round %d: refused upload of node %s (partition %r): %s",
                    self.server_round, node, partition, reason)
        self.rejected.append({"node": node, "partition": partition, "bound": bound,
                              "reason": reason})

    def affecting(self, partitions: set[int]) -> list[dict]:
        """The refusals that claimed one of `partitions` or came from a node bound to one."""
        return [r for r in self.rejected
                if r["partition"] in partitions or r["bound"] in partitions]

    def reasons(self) -> str:
        """Every refusal of the round, on one line."""
        return "; ".join(f"node {r['node']}: {r['reason']}" for r in self.rejected) or "none"


# The fit metrics a participant may report: name -> whether it is required. Anything else is
# refused, so that a participant cannot smuggle data into run.json or the attacker's view.
UPLOAD_METRICS = {
    PARTITION_ID: True,
    "train_loss": True,
    "train_accuracy": True,
    "epsilon": False,  # DP-SGD: the privacy spent so far (inf without noise)
    "generator_loss_first": False,  # the GAN attacker's generator
    "generator_loss_last": False,
    "norm_bit": False,  # client-side adaptive clipping (Flower's adaptiveclipping_mod)
}


def is_integer(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)


def check_metrics(metrics: dict, num_partitions: int) -> int:
    """The partition id the metrics claim; RejectedUpload unless they follow UPLOAD_METRICS."""
    extra = sorted(set(metrics) - set(UPLOAD_METRICS))
    if extra:
        raise RejectedUpload(f"unexpected fit metrics {extra}")
    missing = [k for k, required in UPLOAD_METRICS.items() if required and k not in metrics]
    if missing:
        raise RejectedUpload(f"missing fit metrics {missing}")
    pid = metrics[PARTITION_ID]
    if not is_integer(pid):
        raise RejectedUpload(f"{PARTITION_ID!r} is {pid!r}, not an integer")
    if not 0 <= pid < num_partitions:
        raise RejectedUpload(f"{PARTITION_ID!r} {pid} outside 0..{num_partitions - 1}")
    for key in UPLOAD_METRICS.keys() - {PARTITION_ID}:
        if key not in metrics:
            continue
        value = metrics[key]
        if key == "norm_bit":
            if not isinstance(value, bool | np.bool_) and value not in (0, 1):
                raise RejectedUpload(f"fit metric 'norm_bit' is {value!r}, not a bool")
            continue
        if not is_number(value) or np.isnan(value):
            raise RejectedUpload(f"fit metric {key!r} is {value!r}, not a number")
        if key == "epsilon" and value < 0:
            raise RejectedUpload(f"fit metric 'epsilon' is {value!r}, negative")
        if key != "epsilon" and not np.isfinite(value):
            raise RejectedUpload(f"fit metric {key!r} is {value!r}, not finite")
        if key == "train_accuracy" and not 0 <= value <= 1:
            raise RejectedUpload(f"fit metric 'train_accuracy' is {value!r}, outside [0, 1]")
    return int(pid)


def check_num_examples(num_examples, partition_size: int) -> int:
    """num_examples as an int; RejectedUpload unless 1 <= num_examples <= the partition's size
    (a participant cannot weigh more in the average than the records it holds)."""
    if not is_integer(num_examples):
        raise RejectedUpload(f"num_examples is {num_examples!r}, not an integer")
    if not 1 <= num_examples <= partition_size:
        raise RejectedUpload(f"num_examples {num_examples} outside 1..{partition_size}, "
                             "the size of its partition")
    return int(num_examples)


def check_upload(weights: NDArrays, reference: NDArrays) -> None:
    """Raise RejectedUpload unless weights match the reference shapes and dtypes and are all
    finite."""
    if len(weights) != len(reference):
        raise RejectedUpload(f"{len(weights)} tensors, expected {len(reference)}")
    for i, (w, ref) in enumerate(zip(weights, reference, strict=True)):
        if w.shape != ref.shape:
            raise RejectedUpload(f"tensor {i} has shape {w.shape}, expected {ref.shape}")
        if w.dtype != ref.dtype:
            raise RejectedUpload(f"tensor {i} has dtype {w.dtype}, expected {ref.dtype}")
        if w.dtype.kind == "f" and not np.isfinite(w).all():
            raise RejectedUpload(f"tensor {i} holds NaN or Inf")


def read_upload(parameters: Parameters) -> NDArrays:
    """The upload's tensors; RejectedUpload if they cannot be deserialised (never unpickled)."""
    try:
        return parameters_to_ndarrays(parameters)
    except Exception as err:  # any malformed payload is the participant's fault
        raise RejectedUpload(f"unreadable tensors ({type(err).__name__}: {err})") from None


class RecordingStrategy(Strategy):
    """A Flower strategy (``inner``) that records the aggregator's observations around it.

    Every upload is untrusted: one whose partition id, num_examples, fit metrics or tensors do not
    check out is refused (logged with the reason, listed in the round's log) and the round goes
    on with the others. Which node is which participant is learnt from accepted uploads only: a
    node keeps the partition it first uploaded as; two uploads of one round that claim the same
    partition are both refused, unless one comes from the node that holds it. A round in which no
    upload was accepted, or a full disk, fails the run (``failure``): the remaining rounds send
    nothing and evaluate nothing, and ``on_failure`` is told why. Sampling, the fit config and
    aggregation are the inner strategy's; evaluation is delegated to it too.

    Args:
        store: where observations are written (view "global").
        record_round: which rounds to record.
        weight_names: tensor names of the model, in the order of Flower's parameter list.
        fit_config: ``round -> config`` sent to every participant (learning rate, epochs...),
            when the inner strategy is built here.
        partition_sizes: the number of training records of each partition, by partition id.
        on_round: called after each aggregation with (round, RoundLog).
        on_failure: called once with the exception that failed the run.
        inner: the strategy to wrap; None: `strategies.inner.OrderedFedAvg` built from
            ``fit_config`` and ``kwargs`` (initial_parameters, evaluate_fn, min clients...).
        secure_aggregation: the round is run by SecAgg+: results carry the aggregate, not
            uploads (see the module docstring).
        uniform_weights: every accepted upload weighs 1 in the inner strategy's average
            (client-level DP: one participant moves the average by at most clip / sampled).
        noise_seed: seeds numpy's global generator before each aggregation, from which Flower's
            DP wrappers draw their noise (so the same seed gives the same run); None: untouched.
        last_round: the federation's last round. Given, a round's uploads and aggregate are
            written in a thread of their own while the next round trains (the aggregator is
            idle then), at most one round in flight; the last round's are written before
            aggregate_fit returns, so that everything is on disk when the run ends. None: every
            round is written before aggregate_fit returns.
    """

    def __init__(
        self,
        *,
        store: SnapshotStore,
        record_round: Callable[[int], bool],
        weight_names: list[str],
        partition_sizes: list[int],
        fit_config: Callable[[int], dict[str, Scalar]] | None = None,
        on_round: Callable[[int, RoundLog], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        inner: Strategy | None = None,
        secure_aggregation: bool = False,
        uniform_weights: bool = False,
        noise_seed: int | None = None,
        last_round: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        if inner is None:
            inner = inner_strategy("fedavg", on_fit_config_fn=fit_config, **kwargs)
        elif kwargs or fit_config is not None:
            raise TypeError("with an inner strategy, its options are the inner strategy's")
        self.inner = inner
        self.store = store
        self.record_round = record_round
        self.weight_names = weight_names
        self.partition_sizes = [int(n) for n in partition_sizes]
        self.on_round = on_round
        self.on_failure = on_failure
        self.round_logs: list[RoundLog] = []
        self.binding = PartitionBinding(len(self.partition_sizes))
        self.proxy_of: dict[int, ClientProxy] = {}  # partition id -> its proxy this round
        self.failure: Exception | None = None
        self.configured_round = 0  # the last round whose fit instructions went out
        self.aggregated_round = 0  # the last round aggregate_fit was called for
        self.refused_before: dict[int, list[tuple[str, str]]] = {}  # round -> (node, reason)
        # refused before aggregate_fit saw them (a masked vector of the wrong shape: SecAgg+)
        self._broadcast: NDArrays | None = None
        self.secure_aggregation = secure_aggregation
        self.uniform_weights = uniform_weights
        self.noise_seed = noise_seed
        self.last_round = last_round
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None  # the round being written in the background
        self._pending_keys: set[tuple[str, int, int | None]] = set()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    @property
    def partition_of(self) -> dict[str, int]:
        """Node id -> the partition it is bound to (strategies.binding)."""
        return self.binding.partition_of

    @property
    def node_of(self) -> dict[int, str]:
        """Partition id -> the node bound to it."""
        return self.binding.node_of

    # -- failing the run -------------------------------------------------------------------

    def fail(self, error: Exception) -> None:
        """Stop the federation: the remaining rounds do nothing; tell on_failure once."""
        if self.failure is not None:
            return
        try:  # what was being written in the background lands (or is reported) first
            self.wait_for_writes()
        except Exception as err:  # the run fails anyway; say what else went wrong
            log.error("writing the previous round's observations failed: %s", err)
        self.failure = error
        log.error("the federated run failed: %s", error)
        if self.on_failure:
            self.on_failure(error)

    @contextmanager
    def disk_guard(self):
        """A full disk fails the run instead of crashing Flower's server loop; what was being
        written is left as it was (every write is atomic)."""
        try:
            yield
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            self.fail(err)

    # -- recording -------------------------------------------------------------------------

    def record(self, kind: str, server_round: int, weights: NDArrays, partition=None) -> None:
        """Write one observation unless this (kind, round, partition) is already on disk."""
        self.record_many(server_round, [(kind, partition, weights)])

    def record_many(self, server_round: int, observations: list[tuple[str, int | None, NDArrays]],
                    background: bool = False) -> None:
        """Write this round's (kind, partition, weights) observations that are not on disk (or
        on their way) yet, with one manifest write for all of them; `background`: in the writer
        thread, unless this is the last round (see `last_round`)."""
        if not observations:
            return
        done = {(r.kind, r.partition) for r in self.store.records(view=VIEW, round=server_round)}
        done |= {(kind, partition) for kind, at, partition in self._pending_keys
                 if at == server_round}
        batch = [Snapshot(kind, server_round, list(zip(self.weight_names, weights, strict=True)),
                          partition=partition)
                 for kind, partition, weights in observations if (kind, partition) not in done]
        if not batch:
            return
        self.wait_for_writes()  # one round in flight at most, written in order
        if not background or self.last_round is None or server_round >= self.last_round:
            self.store.write_many(VIEW, batch)
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._pending_keys = {(b.kind, server_round, b.partition) for b in batch}
        self._pending = self._writer.submit(self.store.write_many, VIEW, batch)

    def wait_for_writes(self) -> None:
        """Block until the round written in the background is on disk; its error (a full
        disk) is raised here."""
        pending, self._pending = self._pending, None
        try:
            if pending is not None:
                pending.result()
        finally:
            self._pending_keys = set()

    # -- Flower hooks ----------------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """The inner strategy's instructions (the global model to the participants it samples);
        the model is recorded as global round-1."""
        if self.failure is not None:
            return []
        self._broadcast = parameters_to_ndarrays(parameters)
        with self.disk_guard():
            if self.record_round(server_round):
                self.record("global", server_round - 1, self._broadcast)
            instructions = self.inner.configure_fit(server_round, parameters, client_manager)
            try:  # every node that will train is bound before it is sent anything
                self.binding.bind_new(client_manager, [proxy for proxy, _ in instructions])
            except BindingConflict as err:
                self.fail(FederationFailed(f"round {server_round}: {err}"))
                return []
            self.configured_round = server_round
            return instructions
        return []

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        if self.failure is not None:
            return []
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def refuse_before_aggregation(self, server_round: int, node: str, reason: str) -> None:
        """A reply refused before it reached aggregate_fit (the SecAgg+ workflow's check of a
        masked vector): listed in that round's log like any refusal."""
        self.refused_before.setdefault(server_round, []).append((node, reason))

    def evaluate(self, server_round: int, parameters: Parameters):
        """Evaluate centrally (the inner strategy's evaluate_fn), unless the run has failed.

        A round whose fit instructions went out but that never reached aggregate_fit (the
        SecAgg+ workflow halted it: too few nodes for its threshold) fails the run here, so
        that no run ends ``finished`` with a model no round trained."""
        if self.failure is None and 0 < server_round == self.configured_round \
                and self.aggregated_round != server_round:
            self.fail(FederationFailed(
                f"round {server_round}: the round was abandoned before aggregation (secure "
                f"aggregation halted: too few participants answered for its threshold); "
                f"no model was aggregated"))
        if self.failure is not None:
            return None
        with self.disk_guard():
            return self.inner.evaluate(server_round, parameters)
        return None

    def check(self, proxy: ClientProxy, res: FitRes) -> tuple[int, NDArrays, int]:
        """(partition, weights, num_examples) of one upload, or RejectedUpload."""
        pid = check_metrics(res.metrics, len(self.partition_sizes))
        try:
            self.binding.check(proxy.cid, pid)
        except ValueError as err:
            raise RejectedUpload(str(err)) from None
        n = check_num_examples(res.num_examples, self.partition_sizes[pid])
        if self.secure_aggregation:  # the parameters are the round's aggregate: checked once
            return pid, None, n
        weights = read_upload(res.parameters)
        check_upload(weights, self._broadcast)
        if self.uniform_weights and all(np.array_equal(w, b) for w, b in
                                        zip(weights, self._broadcast, strict=True)):
            raise RejectedUpload("its update is zero (the model it was sent), which Flower's "
                                 "DP clipping cannot scale (it divides by the update's norm)")
        return pid, weights, n

    def accept(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], log_: RoundLog):
        """Validate uploads; return [(partition, weights, num_examples)] sorted by partition.

        A node is bound to one partition (strategies.binding) and uploads once a round, so no
        two accepted uploads share a partition; a second reply of one node is refused."""
        accepted, seen = [], set()
        for proxy, res in results:
            bound = self.partition_of.get(proxy.cid)
            try:
                if proxy.cid in seen:
                    raise RejectedUpload("a second upload of this node in the round")
                seen.add(proxy.cid)
                pid, weights, n = self.check(proxy, res)
            except RejectedUpload as err:
                claimed = res.metrics.get(PARTITION_ID)
                log_.refuse(proxy.cid, claimed if is_integer(claimed) else None, str(err),
                            bound)
                continue
            self.proxy_of[pid] = proxy
            accepted.append((pid, weights, n))
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
        with self.disk_guard():
            return self._aggregate_fit(server_round, results, failures)
        return None, {}

    def _aggregate_fit(self, server_round, results, failures):
        self.aggregated_round = server_round
        round_log = RoundLog(server_round)
        for node, reason in self.refused_before.pop(server_round, []):  # by the SecAgg+ workflow
            round_log.refuse(node, self.partition_of.get(node), reason,
                             self.partition_of.get(node))
        for failure in failures:
            if isinstance(failure, tuple):
                proxy, res = failure
                round_log.refuse(proxy.cid, None, f"failed: {res.status.message}")
            else:
                round_log.refuse(None, None, one_line(f"failed: {failure!r}"))
            unusable = user_code_failure(str(failure[1].status.message if isinstance(
                failure, tuple) else failure))
            if unusable:  # it would fail every round: the run stops now, saying why
                self.fail(FederationFailed(f"round {server_round}: a participant cannot load "
                                           f"the experiment: {unusable}"))
                return None, {}
        accepted = self.accept(server_round, results, round_log)
        self.round_logs.append(round_log)
        if self.secure_aggregation and accepted:
            try:
                aggregate = self.secure_aggregate(results)
            except RejectedUpload as err:
                round_log.refuse(None, None, f"the secure aggregate: {err}")
                accepted = []
            else:
                accepted = [(pid, aggregate, n) for pid, _, n in accepted]
        if not accepted:
            if self.on_round:
                self.on_round(server_round, round_log)
            self.fail(FederationFailed(f"round {server_round}: no upload was accepted "
                                       f"({round_log.reasons()})"))
            return None, {}
        recording = self.record_round(server_round)
        observed = [("upload", pid, weights) for pid, weights, _ in accepted] if (
            recording and not self.secure_aggregation) else []
        try:
            aggregate = self.aggregate(server_round, accepted)
        except FederationFailed as err:  # the inner strategy produced no model
            self.record_many(server_round, observed)
            self.fail(err)
            return None, {}
        if recording:
            observed.append(("global", None, aggregate))
        self.record_many(server_round, observed, background=True)
        if self.last_round is not None and server_round >= self.last_round:
            self.wait_for_writes()  # every round on disk before the run is declared finished
        if self.on_round:
            self.on_round(server_round, round_log)
        return ndarrays_to_parameters(aggregate), {"accepted": len(accepted)}

    def secure_aggregate(self, results: list[tuple[ClientProxy, FitRes]]) -> NDArrays:
        """The round's aggregate under SecAgg+ (every result carries the same one), in the model's
        dtypes; RejectedUpload unless its shapes match and it is finite."""
        aggregate = read_upload(results[0][1].parameters)
        if len(aggregate) != len(self._broadcast):
            raise RejectedUpload(f"{len(aggregate)} tensors, expected {len(self._broadcast)}")
        aggregate = [_as_dtype(a, ref.dtype) for a, ref in
                     zip(aggregate, self._broadcast, strict=True)]
        check_upload(aggregate, self._broadcast)
        return aggregate

    def aggregate(self, server_round: int, accepted: list[tuple[int, NDArrays, int]]) -> NDArrays:
        """The new global model; subclasses (malicious aggregators) hook in here."""
        return self.delegate(server_round, accepted)

    def delegate(self, server_round: int, uploads: list[tuple[int, NDArrays, int]]) -> NDArrays:
        """The inner strategy's aggregate of checked (partition, weights, num_examples) uploads,
        in the order given (partition order)."""
        if uploads and type(self.inner) is OrderedFedAvg:  # what its aggregate_fit computes,
            # without serialising every upload into Flower's Parameters and back (bit-identical)
            aggregate = weighted_average([(weights, 1 if self.uniform_weights else n)
                                          for _, weights, n in uploads])
            self.check_aggregate(server_round, aggregate, uploads)
            return aggregate
        results = [(self.proxy_of[pid], FitRes(Status(Code.OK, "accepted"),
                                               ndarrays_to_parameters(weights),
                                               1 if self.uniform_weights else n,
                                               self.inner_metrics(server_round, pid)))
                   for pid, weights, n in uploads]
        if self.noise_seed is not None:  # Flower's DP noise comes from numpy's global generator
            np.random.seed((self.noise_seed * 1_000_003 + server_round) % 2**32)
        parameters, _ = self.inner.aggregate_fit(server_round, results, [])
        if parameters is None:
            raise FederationFailed(f"round {server_round}: {self.inner!r} aggregated nothing "
                                   f"from {len(uploads)} accepted uploads")
        # In the model's dtypes: Flower's FedOpt strategies compute (and return) float64, which
        # the next round's float32 uploads would no longer match.
        aggregate = parameters_to_ndarrays(parameters)
        if len(aggregate) != len(uploads[0][1]):
            raise FederationFailed(f"round {server_round}: {self.inner!r} returned "
                                   f"{len(aggregate)} tensors, expected {len(uploads[0][1])}")
        aggregate = [_as_dtype(a, w.dtype) for a, w in zip(aggregate, uploads[0][1], strict=True)]
        self.check_aggregate(server_round, aggregate, uploads)
        return aggregate

    def check_aggregate(self, server_round: int, aggregate: NDArrays,
                        uploads: list[tuple[int, NDArrays, int]]) -> None:
        """FederationFailed unless the inner strategy's model is finite and of the model's
        shapes, and moved if the average of the accepted uploads did (issue 25, item 5: FedAdam
        whose moments overflowed returns the model it was sent, round after round; the uploads
        alone may cancel out, which is why their average is the test, not each of them)."""
        try:
            check_upload(aggregate, self._broadcast)
        except RejectedUpload as err:
            raise FederationFailed(f"round {server_round}: the new global model of "
                                   f"{self.inner!r} is unusable: {err}") from None
        if not uploads or not all(np.array_equal(a, b) for a, b in
                                  zip(aggregate, self._broadcast, strict=True)):
            return
        average = weighted_average([(weights, 1 if self.uniform_weights else n)
                                    for _, weights, n in uploads])
        if not all(np.array_equal(a, b) for a, b in zip(average, self._broadcast, strict=True)):
            raise FederationFailed(
                f"round {server_round}: {self.inner!r} returned the model it was sent, "
                f"unchanged, although the average of its {len(uploads)} accepted upload(s) "
                f"(partitions {', '.join(str(pid) for pid, _, _ in uploads)}) moved: its state "
                "is stuck (an extreme upload can overflow an adaptive optimiser's moments); the "
                "run stops rather than go on training nothing")

    def inner_metrics(self, server_round: int, pid: int) -> dict[str, Scalar]:
        """The fit metrics the inner strategy reads: adaptive clipping's ``norm_bit`` (whether
        the participant's update was clipped), where the participant reported it."""
        logs = [r for r in self.round_logs if r.server_round == server_round]
        metrics = logs[-1].metrics.get(pid, {}) if logs else {}
        return {k: metrics[k] for k in INNER_METRICS if k in metrics}


INNER_METRICS = ("norm_bit",)


def _as_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if array.dtype == dtype:
        return array
    return np.rint(array).astype(dtype) if dtype.kind in "iu" else array.astype(dtype)


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, without terminal colour codes, cut at `limit` characters."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
