"""What an attack receives: a typed input holding what its threat model grants, never the run.

An attack reads an :class:`AttackInput` (through the context of `fedattack.membership`): the
models it observed, by round; the victim it attacks and its partitions; the knowledge it holds
(labelled known records, shadow data, the unlabelled targets); the target's architecture and
recipe as the attacker knows them (to train shadow or reference models); the aggregator's view of
the federation when its threat model grants it (a global attacker without secure aggregation);
and folders where it may cache what it computes. It holds no path into the run directory's
records and no ground truth: membership is read by the evaluation alone, after the scores.

Rounds and participants are integers here; the names results carry ("participant-3",
"round-12") are made from them for display, never parsed back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fedattack.config import AttackConfig, AttackerConfig, TrainConfig
    from fedattack.data import Dataset, Knowledge
    from fedattack.snapshots import View


@dataclass(frozen=True)
class Observation:
    """What the attacker observed of its victim: T model snapshots from one view, in time order.

    `rounds` gives each snapshot's round (federated); a stand-alone attacker's snapshots have
    tags instead ("final", "before", "after") and no rounds."""

    attacker: str  # "standalone", "standalone-finetune", "global", "local"
    mode: str  # "passive", "gradient-ascent", ...
    view: str  # the snapshot store's view the models come from
    labels: list[str]  # one per snapshot: "round-10", "final", "before" ...
    models: list[nn.Module]
    observed: str = ""  # what the snapshots are, in words (fedattack.observation.observed_text)
    rounds: tuple[int, ...] = ()  # one per snapshot when federated


@dataclass(frozen=True)
class TargetModel:
    """The target's architecture and training recipe, as the attacker knows them (not its data):
    what shadow and reference models are built and trained with."""

    build: Callable[[int], nn.Module]  # seed -> an untrained model of the target's architecture
    identity: dict[str, Any]  # the architecture, for cache keys (model, input shape, classes)
    training: TrainConfig
    epochs: int  # a shadow or reference model's epochs: the target's (federated: rounds x local)


class NotGranted(ValueError):
    """An attack asked for something its threat model does not grant."""


@dataclass(frozen=True)
class AggregatorView:
    """The aggregator's record of the federation, as a global attacker reads it: the model it
    broadcast at each round's start, the model it sent a participant alone (isolation), and each
    participant's upload. Only given where the threat model grants it."""

    view: View
    build: Callable[[], nn.Module]  # an untrained target model, to load recorded weights into
    participants: tuple[int, ...]  # every participant's partition id

    def _model(self, records, what: str) -> nn.Module:
        from fedattack.training import set_weights

        if not records:
            raise NotGranted(f"needs {what}, which was not recorded")
        model = self.build()
        set_weights(model, self.view.read_arrays(records[0]))
        return model.eval()

    def broadcast(self, server_round: int) -> nn.Module:
        """The global model broadcast at the start of `server_round` (global round t - 1)."""
        return self._model(self.view.records(kind="global", round=server_round - 1),
                           f"the model broadcast at round {server_round} (global round "
                           f"{server_round - 1})")

    def sent(self, server_round: int, partition: int) -> nn.Module | None:
        """The model sent to `partition` alone in `server_round` (isolation), or None."""
        records = self.view.records(kind="sent", round=server_round, partition=partition)
        return self._model(records, "") if records else None

    def upload(self, server_round: int, partition: int) -> nn.Module:
        """Participant `partition`'s upload of `server_round`."""
        return self._model(self.view.records(kind="upload", round=server_round,
                                             partition=partition),
                           f"participant {partition}'s upload of round {server_round}")


@dataclass(frozen=True)
class AttackInput:
    """Everything an attack on one victim may read (see the module docstring)."""

    victim: str  # the victim's name in results ("participant-3", "all", "others-of-0" ...)
    partitions: tuple[int, ...]  # the partitions whose union the victim's data is
    observation: Observation
    knowledge: Knowledge
    dataset: Dataset
    target: TargetModel
    settings: AttackConfig  # the attack block: features, attack network, each attack's params
    seed: int
    device: torch.device
    cache: Path  # this victim's feature caches
    reference_cache: Path  # reference models, shared by a campaign's experiments
    attacker: AttackerConfig | None = None  # the attacker's own plan (its ascent rounds ...)
    aggregator: AggregatorView | None = None  # granted to a global attacker without SecAgg+
    log: Callable[[str], None] = field(default=print, compare=False)

    @property
    def partition(self) -> int:
        """The victim's one partition; NotGranted for a victim of several (a local attacker's)."""
        if len(self.partitions) != 1:
            raise NotGranted(f"needs a victim of one participant, not {self.victim!r}")
        return self.partitions[0]

    def aggregator_view(self) -> AggregatorView:
        """The aggregator's view; NotGranted where the threat model does not grant it."""
        if self.aggregator is None:
            raise NotGranted(f"needs the aggregator's view of each upload, which the "
                             f"{self.observation.attacker} attacker ({self.observation.observed})"
                             " does not have")
        return self.aggregator
