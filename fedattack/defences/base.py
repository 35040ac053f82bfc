"""What a defence is, for the threat model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

AGGREGATOR = "global"  # the attacker kinds of fedattack.config.AttackerConfig
PARTICIPANT = "local"


@dataclass(frozen=True)
class Defence:
    """One defence.

    Attributes:
        name: as `fedattack list` and the docs name it.
        key: the experiment key whose block turns it on (``federation.secure_aggregation``).
        what: what it does, in one sentence.
        active: whether an experiment deploys it.
        label: the few words the run's defence label gives it (for an experiment deploying it).
        hides: attacker kind (AGGREGATOR, PARTICIPANT) -> what the defence hides from it.
        hides_uploads_from_aggregator: the aggregator sees no individual upload, only their sum
            (attacks that read uploads are then refused; the recorder keeps no upload).
        server: ``module:attribute`` of its server-side piece (a strategy wrapper or workflow),
            or None.
        client: ``module:attribute`` of its client-side piece (a Flower mod, or the training
            code honest participants run), or None.
    """

    name: str
    key: str
    what: str
    active: Callable[[object], bool]
    label: Callable[[object], str]
    hides: dict[str, str] = field(default_factory=dict)
    hides_uploads_from_aggregator: bool = False
    server: str | None = None
    client: str | None = None

    def hides_from(self, attacker: str) -> str | None:
        """What this defence hides from an attacker of kind `attacker`, or None."""
        return self.hides.get(attacker)
