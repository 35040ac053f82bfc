"""What the aggregator's wrappers share: a Flower strategy that wraps another, one behaviour each
(as Flower's ``DifferentialPrivacyServerSide*`` wrap an inner strategy), and the run's state.

The aggregator of an experiment is a composition, outermost first (strategies/recording.py builds
it; each wrapper works around any legacy Flower strategy):

    UploadGate      strategies/gate.py      checks every upload, binds nodes to partitions, hands
                                            on the accepted ones in partition order, fails the run
    Recorder        strategies/recorder.py  writes the aggregator's view: the model broadcast,
                                            every upload it is handed, what it sends to one
                                            participant alone, the aggregate
    MaliciousWrapper strategies/malicious.py gradient ascent and isolation (the global attacker)
    ModelCheck      strategies/gate.py      the inner strategy's model: in the model's dtypes,
                                            finite, and not frozen while the uploads moved
    UniformWeights  strategies/client_dp.py client-level DP: every upload weighs 1, the noise seeded
    <inner>         the user's strategy: FedAvg, FedAdam, Krum, a DP wrapper around one, ...

The order is the threat model's: the recorder sits inside the gate (it records what the
aggregator accepted, never a refused upload) and outside the malice and the inner strategy (it
records the uploads as the aggregator received them, before server-side DP clips and noises them,
and the model the malice broadcast). Under SecAgg+ the recorder keeps no upload at all: the
results it is handed carry the aggregate.

Wrappers find each other's state only through `RunState`; an attribute a wrapper lacks is looked
up on the strategy it wraps (``gate.store`` is the recorder's store, ``gate.inner`` the next
layer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.common import NDArrays, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import Strategy

from strategies.binding import PartitionBinding

log = logging.getLogger(__name__)

_ARRAYS = "_fedattack_arrays"  # the decoded tensors, cached on a Parameters object


class RejectedUpload(ValueError):
    """An upload the aggregator refuses to average (wrong shapes, NaN/Inf, no partition id)."""


def arrays_of(parameters: Parameters) -> NDArrays:
    """The tensors of `parameters`, decoded once (cached on the object; never unpickled);
    RejectedUpload if they cannot be decoded. The arrays are shared: read them, never write."""
    cached = getattr(parameters, _ARRAYS, None)
    if cached is None:
        try:
            cached = parameters_to_ndarrays(parameters)
        except Exception as err:  # any malformed payload is the participant's fault
            raise RejectedUpload(f"unreadable tensors ({type(err).__name__}: {err})") from None
        setattr(parameters, _ARRAYS, cached)
    return cached


def to_parameters(arrays: NDArrays) -> Parameters:
    """Flower's Parameters of `arrays`, with the arrays cached (arrays_of reads them back free)."""
    parameters = ndarrays_to_parameters(arrays)
    setattr(parameters, _ARRAYS, list(arrays))
    return parameters


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


class RunState:
    """The state the wrappers of one aggregator share: which node holds which partition, the
    rounds' logs, and whether the run failed (``fail``: once; the remaining rounds then send
    and evaluate nothing, ``on_failure`` is told why)."""

    def __init__(self, partition_sizes: list[int],
                 on_failure: Callable[[Exception], None] | None = None) -> None:
        self.partition_sizes = [int(n) for n in partition_sizes]
        self.binding = PartitionBinding(len(self.partition_sizes))
        self.round_logs: list[RoundLog] = []
        self.failure: Exception | None = None
        self.on_failure = on_failure
        self.before_failing: list[Callable[[], None]] = []  # e.g. the recorder's pending writes

    def fail(self, error: Exception) -> None:
        """Stop the federation: the remaining rounds do nothing; tell on_failure once."""
        if self.failure is not None:
            return
        for hook in self.before_failing:  # what was being written lands (or is reported) first
            try:
                hook()
            except Exception as err:  # the run fails anyway; say what else went wrong
                log.error("before failing the run: %s", err)
        self.failure = error
        log.error("the federated run failed: %s", error)
        if self.on_failure:
            self.on_failure(error)

    def current_log(self, server_round: int) -> RoundLog | None:
        """The log of `server_round`, if the gate opened one."""
        if self.round_logs and self.round_logs[-1].server_round == server_round:
            return self.round_logs[-1]
        return None


class Wrapper(Strategy):
    """A strategy around ``inner``: every hook delegates to it unless a subclass changes it, and
    an attribute this wrapper lacks is the inner strategy's."""

    def __init__(self, inner: Strategy) -> None:
        super().__init__()
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __getattr__(self, name: str):
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def initialize_parameters(self, client_manager):
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(self, server_round, parameters, client_manager):
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(self, server_round, parameters, client_manager):
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round, results, failures):
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round, parameters):
        return self.inner.evaluate(server_round, parameters)


__all__ = ["RejectedUpload", "RoundLog", "RunState", "Wrapper", "arrays_of", "to_parameters"]
