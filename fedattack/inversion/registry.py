"""The reconstruction attacks, by name, beside the membership attacks of fedattack.attack_registry.

A reconstruction attack is one module of this package whose run function is registered with one
decorator::

    @register("dlg", params=DLGParams, knowledge=UPDATE_KNOWLEDGE + "; not the labels",
              threat_model=HONEST_BUT_CURIOUS, description="...")
    def dlg(target, params, device): ...

It takes an `InversionTarget` (fedattack.inversion.core), its parameters (a pydantic model) and a
torch device, and returns a `Reconstruction`. The registry says what each attack knows and under
which threat model of the gradient-inversion SoK (Carletti et al., USENIX Security 2025) it
runs; the offline stage copies both into every result row.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

HONEST_BUT_CURIOUS = "honest-but-curious server"
"""The aggregator follows the protocol (it sends the true model, aggregates honestly) and reads
what it is sent: every attack here is passive."""

UPDATE_KNOWLEDGE = ("the architecture, the broadcast and the uploaded weights, the local recipe "
                    "(optimizer, learning rate, batch size, local epochs and so steps) and the "
                    "number of records; not the records nor their shuffle order")
BUILTINS = ("dlg", "idlg", "inverting")  # the modules that register the built-in attacks


def one_line(err: ValidationError, prefix: str) -> str:
    """pydantic's first complaint as `prefix.key: message`."""
    first = err.errors()[0]
    return f"{'.'.join(map(str, (prefix, *first['loc'])))}: {first['msg']}"


class AttackParams(BaseModel):
    """An attack's parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class ReconstructionAttack:
    name: str
    run: Callable[..., Any]  # (InversionTarget, params, device) -> Reconstruction
    params: type
    knowledge: str
    threat_model: str
    description: str

    def parameters(self, given: dict | None = None) -> Any:
        """The attack's parameters from a mapping; ValueError in one line for an unknown key
        or a bad value."""
        try:
            return self.params.model_validate(given or {})
        except ValidationError as err:
            raise ValueError(one_line(err, self.name)) from None


_REGISTRY: dict[str, ReconstructionAttack] = {}


def register(name: str, *, params: type, knowledge: str, threat_model: str,
             description: str) -> Callable:
    """Register the decorated run function as reconstruction attack `name`."""
    if not hasattr(params, "model_validate"):
        raise ValueError(f"reconstruction attack {name!r}: params must be a pydantic model")

    def decorate(run: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"reconstruction attack {name!r} is already registered")
        _REGISTRY[name] = ReconstructionAttack(name, run, params, knowledge, threat_model,
                                               description)
        return run

    return decorate


def registered() -> dict[str, ReconstructionAttack]:
    for module in BUILTINS:
        importlib.import_module(f"fedattack.inversion.{module}")
    return dict(_REGISTRY)


def names() -> list[str]:
    return list(registered())


def get(name: str) -> ReconstructionAttack:
    """The attack called `name`; ValueError naming the accepted ones otherwise."""
    attacks = registered()
    if name in attacks:
        return attacks[name]
    close = difflib.get_close_matches(name, list(attacks), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown reconstruction attack {name!r}{hint} "
                     f"(accepted: {', '.join(attacks)})")
