"""The upload gate: every upload is untrusted, checked before any other wrapper or the inner
strategy sees it; and the model check: what the inner strategy returns is checked before anyone
uses it.

`UploadGate` (outermost) refuses an upload whose partition id, num_examples, fit metrics or
tensors do not check out, or whose partition is not the one its node is bound to
(strategies.binding: bound once, from each node's configuration, before it trains); the refusal
is logged with its reason and listed in the round's log, and the round goes on with the others,
handed on in partition order (so the same seed gives bit-identical models whatever order clients
answer in). A round in which no upload was accepted fails the run; so does a round that never
reached aggregation (SecAgg+ halted it), and anything a wrapper inside raises as
FederationFailed. Under secure aggregation (Flower's SecAggPlusWorkflow drives the round) the
aggregator never holds an upload: the workflow hands every participant's result with the
unmasked *sum* of the round's masked uploads in place of its parameters; the gate then checks
each participant's cleartext metrics and example count, and the aggregate once (a participant
whose metrics are refused is listed as refused, but its masked upload is in the sum: the price of
not seeing uploads is not being able to vet them; strategies.secure_aggregation checks the
masked vectors' shapes).

`ModelCheck` (innermost but the user's strategy and its DP) converts the inner strategy's model
to the model's dtypes (Flower's FedOpt strategies compute in float64) and fails the round unless
it is finite, of the model's shapes, and moved if the accepted uploads' average moved (issue 25,
item 5: FedAdam frozen by one extreme upload).
"""

from __future__ import annotations

import re

import numpy as np
from flwr.common import (
    EvaluateIns,
    FitIns,
    FitRes,
    NDArrays,
    Parameters,
    Scalar,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedattack.protocol import PARTITION_ID, FederationFailed
from fedattack.usercode import user_code_failure
from strategies.binding import BindingConflict
from strategies.inner import weighted_average
from strategies.wrapper import (
    RejectedUpload,
    RoundLog,
    RunState,
    Wrapper,
    arrays_of,
    to_parameters,
)

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
    return arrays_of(parameters)


def as_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if array.dtype == dtype:
        return array
    return np.rint(array).astype(dtype) if dtype.kind in "iu" else array.astype(dtype)


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line, without terminal colour codes, cut at `limit` characters."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def partition_of_result(run: RunState, proxy: ClientProxy, res: FitRes) -> int | None:
    """The partition of an accepted upload: the one it claimed, which the gate has checked is
    its node's (or, without a gate, its node's binding)."""
    pid = res.metrics.get(PARTITION_ID)
    return int(pid) if is_integer(pid) else run.binding.partition_of.get(proxy.cid)


class UploadGate(Wrapper):
    """Checks uploads and binds nodes to partitions around ``inner`` (see the module docstring).

    Args:
        inner: the strategy the accepted uploads are handed to, in partition order.
        run: the state the aggregator's wrappers share (binding, round logs, failure).
        secure_aggregation: the round is run by SecAgg+: results carry the aggregate.
        refuse_zero_updates: refuse an upload equal to the model sent (client-level DP's
            clipping divides by the update's norm).
        on_round: called after each aggregation with (round, RoundLog).
    """

    def __init__(self, inner: Strategy, run: RunState, *, secure_aggregation: bool = False,
                 refuse_zero_updates: bool = False, on_round=None) -> None:
        super().__init__(inner)
        self.run = run
        self.secure_aggregation = secure_aggregation
        self.refuse_zero_updates = refuse_zero_updates
        self.on_round = on_round
        self.configured_round = 0  # the last round whose fit instructions went out
        self.aggregated_round = 0  # the last round aggregate_fit was called for
        self.refused_before: dict[int, list[tuple[str, str]]] = {}  # round -> (node, reason)
        # refused before aggregate_fit saw them (a masked vector of the wrong shape: SecAgg+)
        self._broadcast: NDArrays | None = None

    # -- the run's state, as attributes -----------------------------------------------------

    @property
    def failure(self) -> Exception | None:
        return self.run.failure

    @property
    def on_failure(self):
        return self.run.on_failure

    @on_failure.setter
    def on_failure(self, callback) -> None:
        self.run.on_failure = callback

    @property
    def round_logs(self) -> list[RoundLog]:
        return self.run.round_logs

    @property
    def binding(self):
        return self.run.binding

    @property
    def partition_of(self) -> dict[str, int]:
        """Node id -> the partition it is bound to (strategies.binding)."""
        return self.run.binding.partition_of

    @property
    def node_of(self) -> dict[int, str]:
        return self.run.binding.node_of

    @property
    def partition_sizes(self) -> list[int]:
        return self.run.partition_sizes

    def fail(self, error: Exception) -> None:
        self.run.fail(error)

    # -- Flower hooks ----------------------------------------------------------------------

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """The inner strategy's instructions; every node that will train is bound to its
        partition first (those connected now before the inner strategy, so that a malicious
        wrapper inside knows them; any that joined while it sampled, after)."""
        if self.failure is not None:
            return []
        self._broadcast = arrays_of(parameters)
        try:
            self.binding.bind_new(client_manager)
            instructions = self.inner.configure_fit(server_round, parameters, client_manager)
            if self.failure is not None:
                return []
            self.binding.bind_new(client_manager, [proxy for proxy, _ in instructions])
        except BindingConflict as err:
            self.fail(FederationFailed(f"round {server_round}: {err}"))
            return []
        self.configured_round = server_round
        return instructions

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        if self.failure is not None:
            return []
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

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
        return self.inner.evaluate(server_round, parameters)

    def check(self, proxy: ClientProxy, res: FitRes) -> tuple[int, int]:
        """(partition, num_examples) of one upload, or RejectedUpload."""
        pid = check_metrics(res.metrics, len(self.partition_sizes))
        try:
            self.binding.check(proxy.cid, pid)
        except ValueError as err:
            raise RejectedUpload(str(err)) from None
        n = check_num_examples(res.num_examples, self.partition_sizes[pid])
        if self.secure_aggregation:  # the parameters are the round's aggregate: checked once
            return pid, n
        weights = read_upload(res.parameters)
        check_upload(weights, self._broadcast)
        if self.refuse_zero_updates and all(np.array_equal(w, b) for w, b in
                                            zip(weights, self._broadcast, strict=True)):
            raise RejectedUpload("its update is zero (the model it was sent), which Flower's "
                                 "DP clipping cannot scale (it divides by the update's norm)")
        return pid, n

    def accept(self, results: list[tuple[ClientProxy, FitRes]], log_: RoundLog
               ) -> list[tuple[ClientProxy, FitRes]]:
        """The uploads that check out, sorted by partition.

        A node is bound to one partition (strategies.binding) and uploads once a round, so no
        two accepted uploads share a partition; a second reply of one node is refused."""
        accepted, seen = [], set()
        for proxy, res in results:
            bound = self.partition_of.get(proxy.cid)
            try:
                if proxy.cid in seen:
                    raise RejectedUpload("a second upload of this node in the round")
                seen.add(proxy.cid)
                pid, _ = self.check(proxy, res)
            except RejectedUpload as err:
                claimed = res.metrics.get(PARTITION_ID)
                log_.refuse(proxy.cid, claimed if is_integer(claimed) else None, str(err),
                            bound)
                continue
            accepted.append((pid, proxy, res))
            log_.accepted.append(pid)
            log_.metrics[pid] = dict(res.metrics)
        accepted.sort(key=lambda item: item[0])
        log_.accepted.sort()
        return [(proxy, res) for _, proxy, res in accepted]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Hand the accepted uploads, in partition order, to the inner strategy."""
        self.aggregated_round = server_round
        round_log = RoundLog(server_round)
        for node, reason in self.refused_before.pop(server_round, []):  # by the SecAgg+ workflow
            round_log.refuse(node, self.partition_of.get(node), reason,
                             self.partition_of.get(node))
        for failure in failures:
            if isinstance(failure, tuple):
                proxy, res = failure
                round_log.refuse(proxy.cid, None, f"failed: {res.status.message}",
                                 self.partition_of.get(proxy.cid))
            else:
                round_log.refuse(None, None, one_line(f"failed: {failure!r}"))
            unusable = user_code_failure(str(failure[1].status.message if isinstance(
                failure, tuple) else failure))
            if unusable:  # it would fail every round: the run stops now, saying why
                self.fail(FederationFailed(f"round {server_round}: a participant cannot load "
                                           f"the experiment: {unusable}"))
                return None, {}
        accepted = self.accept(results, round_log)
        self.round_logs.append(round_log)
        if self.secure_aggregation and accepted:
            try:
                aggregate = to_parameters(self.secure_aggregate(accepted))
            except RejectedUpload as err:
                round_log.refuse(None, None, f"the secure aggregate: {err}")
                accepted = []
            else:
                for _, res in accepted:
                    res.parameters = aggregate
        if not accepted:
            if self.on_round:
                self.on_round(server_round, round_log)
            self.fail(FederationFailed(f"round {server_round}: no upload was accepted "
                                       f"({round_log.reasons()})"))
            return None, {}
        try:
            parameters, _ = self.inner.aggregate_fit(server_round, accepted, [])
        except FederationFailed as err:  # a wrapper inside, or the inner strategy, gave no model
            self.fail(err)
            return None, {}
        if self.failure is not None or parameters is None:  # e.g. a full disk
            return None, {}
        if self.on_round:
            self.on_round(server_round, round_log)
        return parameters, {"accepted": len(accepted)}

    def secure_aggregate(self, results: list[tuple[ClientProxy, FitRes]]) -> NDArrays:
        """The round's aggregate under SecAgg+ (every result carries the same one), in the model's
        dtypes; RejectedUpload unless its shapes match and it is finite."""
        aggregate = read_upload(results[0][1].parameters)
        if len(aggregate) != len(self._broadcast):
            raise RejectedUpload(f"{len(aggregate)} tensors, expected {len(self._broadcast)}")
        aggregate = [as_dtype(a, ref.dtype) for a, ref in
                     zip(aggregate, self._broadcast, strict=True)]
        check_upload(aggregate, self._broadcast)
        return aggregate


class ModelCheck(Wrapper):
    """The inner strategy's new model, in the model's dtypes, checked (module docstring);
    FederationFailed, with the round and the reason on one line, otherwise."""

    def __init__(self, inner: Strategy) -> None:
        super().__init__(inner)
        self._broadcast: NDArrays | None = None

    def configure_fit(self, server_round, parameters, client_manager):
        self._broadcast = arrays_of(parameters)
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        if not results:
            return None, {}
        parameters, metrics = self.inner.aggregate_fit(server_round, results, failures)
        if parameters is None:
            raise FederationFailed(f"round {server_round}: {self.inner!r} aggregated nothing "
                                   f"from {len(results)} accepted uploads")
        first = arrays_of(results[0][1].parameters)
        aggregate = arrays_of(parameters)
        if len(aggregate) != len(first):
            raise FederationFailed(f"round {server_round}: {self.inner!r} returned "
                                   f"{len(aggregate)} tensors, expected {len(first)}")
        if any(a.dtype != w.dtype for a, w in zip(aggregate, first, strict=True)):
            # Flower's FedOpt strategies compute (and return) float64, which the next round's
            # float32 uploads would no longer match
            parameters = to_parameters([as_dtype(a, w.dtype) for a, w in
                                        zip(aggregate, first, strict=True)])
            aggregate = arrays_of(parameters)
        self.check_model(server_round, aggregate, results)
        return parameters, metrics

    def check_model(self, server_round: int, aggregate: NDArrays, results) -> None:
        """FederationFailed unless the model is finite and of the model's shapes, and moved if
        the average of the accepted uploads did (the uploads alone may cancel out, which is why
        their average is the test, not each of them)."""
        broadcast = self._broadcast
        try:
            check_upload(aggregate, broadcast)
        except RejectedUpload as err:
            raise FederationFailed(f"round {server_round}: the new global model of "
                                   f"{self.inner!r} is unusable: {err}") from None
        if not all(np.array_equal(a, b) for a, b in zip(aggregate, broadcast, strict=True)):
            return
        average = weighted_average([(arrays_of(res.parameters), res.num_examples)
                                    for _, res in results])
        if not all(np.array_equal(a, b) for a, b in zip(average, broadcast, strict=True)):
            partitions = ", ".join(str(res.metrics.get(PARTITION_ID)) for _, res in results)
            raise FederationFailed(
                f"round {server_round}: {self.inner!r} returned the model it was sent, "
                f"unchanged, although the average of its {len(results)} accepted upload(s) "
                f"(partitions {partitions}) moved: its state is stuck (an extreme upload can "
                "overflow an adaptive optimiser's moments); the run stops rather than go on "
                "training nothing")
