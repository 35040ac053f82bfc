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

Which node is which participant is learnt from the partition id each participant reports with its
first accepted upload (``RecordingStrategy.partition_of``: a refused upload teaches it nothing);
isolation therefore starts at round 2 at the earliest. A model sent to an isolated
participant is recorded as kind ``sent`` with its partition id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.common import FitIns, NDArrays, Parameters, ndarrays_to_parameters
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy

from fedattack.config import AttackerConfig
from strategies.recording import RecordingStrategy

log = logging.getLogger(__name__)


class MaliciousAggregator(RecordingStrategy):
    """A recording strategy that ascends on the target (and known) records and isolates target
    participants; the inner strategy (any Flower strategy) aggregates what it lets through.

    Args:
        attacker: the ``attacker`` block of the experiment (kind ``global``).
        isolated: partition ids to isolate (empty unless the mode isolates).
        ascend: ``(weights, reference) -> weights`` moved up the ascended records' loss,
            reference the model the round started from (``fedattack.active.GradientAscent``);
            None unless the mode is active.
        on_isolated: ``(round, partition, weights)`` called with each isolated participant's
            upload, or None.
        kwargs: passed to RecordingStrategy (the inner strategy among them).
    """

    def __init__(self, *, attacker: AttackerConfig, isolated: set[int],
                 ascend: Callable[[NDArrays, NDArrays], NDArrays] | None,
                 on_isolated: Callable[[int, int, NDArrays], None] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.attacker, self.isolated, self.ascend = attacker, set(isolated), ascend
        self.on_isolated = on_isolated
        self.own_model: dict[int, NDArrays] = {}  # isolated partition -> model to send it
        self.started_from: dict[int, NDArrays] = {}  # isolated partition -> model sent this round

    def __repr__(self) -> str:
        return f"MaliciousAggregator(mode={self.attacker.mode!r}, isolated={sorted(self.isolated)})"

    def isolating(self, server_round: int) -> bool:
        return bool(self.isolated) and server_round >= self.attacker.isolate_from

    # -- Flower hooks ----------------------------------------------------------------------

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """The aggregate to everyone, except an isolated participant's own model to it."""
        instructions = super().configure_fit(server_round, parameters, client_manager)
        self.started_from = {}
        if not self.isolating(server_round):
            return instructions
        return [(proxy, self.instruction_for(proxy, ins, server_round))
                for proxy, ins in instructions]

    def instruction_for(self, proxy: ClientProxy, ins: FitIns, server_round: int) -> FitIns:
        partition = self.partition_of.get(proxy.cid)
        if partition not in self.own_model:
            return ins
        own = self.started_from[partition] = self.own_model[partition]
        if self.record_round(server_round):
            self.record("sent", server_round, own, partition=partition)
        return FitIns(ndarrays_to_parameters(own), ins.config)

    def aggregate(self, server_round: int, accepted: list[tuple[int, NDArrays, int]]) -> NDArrays:
        """Average the non-isolated uploads; ascend the broadcast model at ascent rounds."""
        ascending = self.ascend is not None and self.attacker.ascends(server_round)
        if self.on_isolated is not None:
            for pid, weights, _ in accepted:
                if pid in self.isolated:
                    self.on_isolated(server_round, pid, weights)
        if not self.isolating(server_round + 1):
            aggregate = self.delegate(server_round, accepted)
            if not ascending:
                return aggregate
            return self.ascended(aggregate, self._broadcast, "global")
        for pid, weights, _ in accepted:
            if pid in self.isolated:
                start = self.started_from.get(pid, self._broadcast)
                self.own_model[pid] = (self.ascended(weights, start, str(pid)) if ascending
                                       else weights)
        others = [(pid, w, n) for pid, w, n in accepted if pid not in self.isolated]
        if not others:  # everyone is isolated: the shared model stands still
            log.warning("round %d: every participant is isolated", server_round)
            return self._broadcast
        return self.delegate(server_round, others)

    def ascended(self, weights: NDArrays, start: NDArrays, who: str) -> NDArrays:
        """`weights` moved up the ascended records' loss; what the step did goes into the round's
        log."""
        moved = self.ascend(weights, start)
        last = getattr(self.ascend, "last", None)
        if last and self.round_logs:
            self.round_logs[-1].ascent[who] = dict(last)
        return moved
