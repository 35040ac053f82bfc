"""The malicious aggregator: the global attacker of Nasr et al. (Sections II-B, II-C, IV-D/E).

Passive, it is the recording FedAvg: every participant's upload at the observed rounds is the
global attacker's view. Active, it adds two manipulations, alone or together:

- gradient ascent (eq. 2): at each ascent round the model it broadcasts is first moved up the
  loss of the target records, ``W <- W + gamma * dL/dW``;
- isolation: from round ``isolate_from`` on, each target participant is sent its own last upload
  instead of the aggregate, and its uploads are left out of the others' aggregate, so its training
  is never averaged away. With gradient ascent, the ascent is applied to the isolated model it
  sends back.

Which node is which participant is learnt from the partition id each participant reports with its
first upload; isolation therefore starts at round 2 at the earliest. A model sent to an isolated
participant is recorded as kind ``sent`` with its partition id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.common import FitIns, FitRes, NDArrays, Parameters, ndarrays_to_parameters
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy

from fedattack.config import AttackerConfig
from strategies.recording import RecordingFedAvg, RoundLog, weighted_average

log = logging.getLogger(__name__)


class MaliciousAggregator(RecordingFedAvg):
    """FedAvg that records, ascends on target records and isolates target participants.

    Args:
        attacker: the ``attacker`` block of the experiment (kind ``global``).
        isolated: partition ids to isolate (empty unless the mode isolates).
        ascend: ``weights -> weights + gamma * dL/dW`` on the target records
            (``fedattack.active.GradientAscent``); None unless the mode is active.
        kwargs: passed to RecordingFedAvg.
    """

    def __init__(self, *, attacker: AttackerConfig, isolated: set[int],
                 ascend: Callable[[NDArrays], NDArrays] | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.attacker, self.isolated, self.ascend = attacker, set(isolated), ascend
        self.partition_of: dict[str, int] = {}  # node id -> partition id, from fit metrics
        self.own_model: dict[int, NDArrays] = {}  # isolated partition -> model to send it

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
        if not self.isolating(server_round):
            return instructions
        return [(proxy, self.instruction_for(proxy, ins, server_round))
                for proxy, ins in instructions]

    def instruction_for(self, proxy: ClientProxy, ins: FitIns, server_round: int) -> FitIns:
        partition = self.partition_of.get(proxy.cid)
        if partition not in self.own_model:
            return ins
        own = self.own_model[partition]
        if self.record_round(server_round):
            self.record("sent", server_round, own, partition=partition)
        return FitIns(ndarrays_to_parameters(own), ins.config)

    def accept(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
               log_: RoundLog):
        """Validate uploads as FedAvg does, and learn which node is which participant."""
        accepted = super().accept(server_round, results, log_)
        pids = set(log_.accepted)
        for proxy, res in results:
            pid = res.metrics.get("partition_id")
            if pid in pids:
                self.partition_of[proxy.cid] = int(pid)
        return accepted

    def aggregate(self, server_round: int, accepted: list[tuple[int, NDArrays, int]]) -> NDArrays:
        """Average the non-isolated uploads; ascend the broadcast model at ascent rounds."""
        ascending = self.ascend is not None and self.attacker.ascends(server_round)
        if not self.isolating(server_round + 1):
            aggregate = weighted_average([(w, n) for _, w, n in accepted])
            return self.ascend(aggregate) if ascending else aggregate
        for pid, weights, _ in accepted:
            if pid in self.isolated:
                self.own_model[pid] = self.ascend(weights) if ascending else weights
        others = [(w, n) for pid, w, n in accepted if pid not in self.isolated]
        if not others:  # everyone is isolated: the shared model stands still
            log.warning("round %d: every participant is isolated", server_round)
            return self._broadcast
        return weighted_average(others)
