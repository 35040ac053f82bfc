"""The malicious aggregator: the global attacker of Nasr et al. (Sections II-B, II-C, IV-D/E).

Passive, it is the recording strategy: every participant's upload at the observed rounds is the
global attacker's view. Active, it adds two manipulations, alone or together:

- gradient ascent (eq. 2): at each ascent round the model it broadcasts is first moved up the
  loss of the target records and of the attacker's known records (``ascend``, built from
  fedattack.active.ascended_records: its attack then trains on records treated as the targets
  were), by a step relative to the round's update (the aggregate minus the model broadcast at
  the round's start) or by the paper's absolute ``gamma * dL/dW``;
- isolation: from round ``isolate_from`` on, each target participant is sent its own last upload
  instead of the aggregate, and its uploads are left out of the others' aggregate, so its training
  is never averaged away. With gradient ascent, the ascent is applied to the isolated model it
  sends back, relative to that participant's own update. Each isolated participant's upload
  (its model) is also handed to ``on_isolated`` (run.json's test accuracy of the victim's model).

The malice is a wrapper of its own (`MaliciousWrapper`, around any Flower strategy: it decides
what is broadcast and what is averaged, the inner strategy averages); `MaliciousAggregator` is the
experiment's composition of it with the upload gate and the recorder (strategies/recording.py).
Which node is which participant is the gate's binding (strategies.binding: each node's
configured partition, bound before it trains); a participant is isolated from the round after its
first accepted upload, so isolation starts at round 2 at the earliest. A model sent to an isolated
participant is recorded (by the recorder) as kind ``sent`` with its partition id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.common import FitIns, NDArrays, Parameters
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedattack.config import AttackerConfig
from strategies.gate import partition_of_result
from strategies.recording import RecordingStrategy
from strategies.wrapper import RunState, Wrapper, arrays_of, to_parameters

log = logging.getLogger(__name__)


class MaliciousWrapper(Wrapper):
    """Ascends on the target (and known) records and isolates target participants around
    ``inner`` (any Flower strategy), which aggregates what it lets through.

    Args:
        inner: the aggregation rule.
        run: the aggregator's shared state (which node holds which partition; the round's log,
            into which each ascent step's figures go). Without a gate, a RunState of its own.
        attacker: the ``attacker`` block of the experiment (kind ``global``).
        isolated: partition ids to isolate (empty unless the mode isolates).
        ascend: ``(weights, reference) -> weights`` moved up the ascended records' loss,
            reference the model the round started from (``fedattack.active.GradientAscent``);
            None unless the mode is active.
        on_isolated: ``(round, partition, weights)`` called with each isolated participant's
            upload, or None.
    """

    def __init__(self, inner: Strategy, run: RunState, *, attacker: AttackerConfig,
                 isolated: set[int], ascend: Callable[[NDArrays, NDArrays], NDArrays] | None,
                 on_isolated: Callable[[int, int, NDArrays], None] | None = None) -> None:
        super().__init__(inner)
        self.run = run
        self.attacker, self.isolated, self.ascend = attacker, set(isolated), ascend
        self.on_isolated = on_isolated
        self.own_model: dict[int, NDArrays] = {}  # isolated partition -> model to send it
        self.started_from: dict[int, NDArrays] = {}  # isolated partition -> model sent this round
        self._broadcast: NDArrays | None = None

    def __repr__(self) -> str:
        return (f"MaliciousWrapper({self.inner!r}, mode={self.attacker.mode!r}, "
                f"isolated={sorted(self.isolated)})")

    def isolating(self, server_round: int) -> bool:
        return bool(self.isolated) and server_round >= self.attacker.isolate_from

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """The aggregate to everyone, except an isolated participant's own model to it."""
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        self._broadcast = arrays_of(parameters)
        self.started_from = {}
        if not self.isolating(server_round):
            return instructions
        return [(proxy, self.instruction_for(proxy, ins)) for proxy, ins in instructions]

    def instruction_for(self, proxy: ClientProxy, ins: FitIns) -> FitIns:
        partition = self.run.binding.partition_of.get(proxy.cid)
        if partition not in self.own_model:
            return ins
        own = self.started_from[partition] = self.own_model[partition]
        return FitIns(to_parameters(own), ins.config)

    def aggregate_fit(self, server_round: int, results, failures):
        """Average the non-isolated uploads; ascend the broadcast model at ascent rounds."""
        ascending = self.ascend is not None and self.attacker.ascends(server_round)
        partition = {id(res): partition_of_result(self.run, proxy, res) for proxy, res in results}
        if self.on_isolated is not None:
            for _, res in results:
                if partition[id(res)] in self.isolated:
                    self.on_isolated(server_round, partition[id(res)], arrays_of(res.parameters))
        if not self.isolating(server_round + 1):
            parameters, metrics = self.inner.aggregate_fit(server_round, results, failures)
            if not ascending or parameters is None:
                return parameters, metrics
            return to_parameters(self.ascended(server_round, arrays_of(parameters),
                                               self._broadcast, "global")), metrics
        for _, res in results:
            pid = partition[id(res)]
            if pid in self.isolated:
                weights = arrays_of(res.parameters)
                start = self.started_from.get(pid, self._broadcast)
                self.own_model[pid] = (self.ascended(server_round, weights, start, str(pid))
                                       if ascending else weights)
        others = [(proxy, res) for proxy, res in results if partition[id(res)] not in self.isolated]
        if not others:  # everyone is isolated: the shared model stands still
            log.warning("round %d: every participant is isolated", server_round)
            return to_parameters(self._broadcast), {}
        return self.inner.aggregate_fit(server_round, others, failures)

    def ascended(self, server_round: int, weights: NDArrays, start: NDArrays,
                 who: str) -> NDArrays:
        """`weights` moved up the ascended records' loss; what the step did goes into the round's
        log."""
        moved = self.ascend(weights, start)
        last = getattr(self.ascend, "last", None)
        round_log = self.run.current_log(server_round)
        if last and round_log is not None:
            round_log.ascent[who] = dict(last)
        return moved


class MaliciousAggregator(RecordingStrategy):
    """The experiment's malicious aggregator: the upload gate, the recorder, and the malice
    (`MaliciousWrapper`) around the inner strategy (any Flower strategy).

    Args:
        attacker, isolated, ascend, on_isolated: MaliciousWrapper's.
        kwargs: passed to RecordingStrategy (the inner strategy among them).
    """

    def __init__(self, *, attacker: AttackerConfig, isolated: set[int],
                 ascend: Callable[[NDArrays, NDArrays], NDArrays] | None,
                 on_isolated: Callable[[int, int, NDArrays], None] | None = None,
                 **kwargs) -> None:
        self._malice = {"attacker": attacker, "isolated": isolated, "ascend": ascend,
                        "on_isolated": on_isolated}
        super().__init__(**kwargs)

    def __repr__(self) -> str:
        return f"MaliciousAggregator(mode={self.attacker.mode!r}, isolated={sorted(self.isolated)})"

    def malice(self, inner: Strategy, run: RunState) -> Strategy:
        return MaliciousWrapper(inner, run, **self._malice)
