"""The attack registry: every membership attack, by name, with what it needs and where it runs.

An attack is one module under ``fedattack/attacks/`` whose run function is registered with one
decorator (as Opacus registers its grad samplers)::

    @register("threshold-loss", knowledge="supervised", description="-loss, threshold fitted "
              "on the known records")
    def threshold_loss(ctx):
        return ctx.threshold("loss")

The decorator declares the attack's name, the knowledge it needs (`KNOWLEDGE`), the scenarios
and attackers it can run on, whether it trains the attack network on ``attack.features`` (whose
memory `fedattack validate` checks), its parameters as a pydantic model (given in the experiment
under the attack's own name in the ``attack:`` block, ``attack: {toy: {strength: 2}}``, as
LeakPro's attacks own their configs) and a ``check(experiment)`` that refuses, with one line, an
experiment the attack cannot run. The config's accepted attack names, the offline stage's
dispatch and the knowledge column of every result come from here, so they cannot disagree.

An attack may live outside this package: a module of the user's that calls `register` is loaded
through a Python entry point of the group ``fedattack.attacks`` (``[project.entry-points.
"fedattack.attacks"] toy = "mypkg.toy"``), whenever the registry is first read, or named in the
experiment's ``attack.plugins: [mypkg.toy]``, when the experiment is parsed; so ``validate``,
``run``, the offline attack and every worker that parses the experiment know it alike.

A run function takes the attack context (`fedattack.membership.AttackContext`): its typed input
(`fedattack.attack_input.AttackInput`: the observed models by round, the victim's partitions,
the attacker's knowledge, the target's architecture and recipe, the aggregator's view where the
threat model grants it; never the run directory nor the ground truth) and the shared machinery
(feature extraction, the attack network, the loss threshold, the reference models). It returns
an `AttackOutcome`: one score per target, higher meaning member. This module imports nothing of the
project, and an attack module imports torch, scipy and scikit-learn inside the functions that use
them, never at its top: the config reads the registry (names, parameters, checks) when it parses
an experiment, which imports neither torch nor Flower nor Ray (tests/test_lazy_parse.py). A
plug-in may import what it likes; it then costs its own imports to parse an experiment naming it.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from fedattack import defences

# What an attack needs besides the observed models (the "knowledge" column of a result):
KNOWLEDGE = {
    "supervised": "labelled known members and non-members of the victim",
    "shadow": "shadow data of the same distribution, no member of the victim",
    "unsupervised": "nothing but the unlabelled targets",
    "reference": "unlabelled population records, to train reference models on",
    "observed": "nothing beyond the attacker's view (e.g. the other participants' uploads)",
}
SCENARIOS = ("standalone", "finetune", "federated")
ATTACKERS = ("standalone", "global", "local")  # who observes: see fedattack.membership.observe
BUILTINS = "fedattack.attacks"  # the package whose modules register the built-in attacks
ENTRY_POINTS = "fedattack.attacks"  # the entry-point group of attacks outside the package


@dataclass
class AttackOutcome:
    """Scores (higher = member) for the targets; hard predictions where the attack makes them."""

    attack: str
    features: str
    scores: Any  # np.ndarray of float64, one per target
    predictions: Any = None  # np.ndarray of 0/1, where the attack thresholds itself
    threshold: float = 0.5
    extra: dict | None = None
    training: dict | None = None  # a learnt attack's training record


@dataclass(frozen=True)
class Attack:
    """One registered attack."""

    name: str
    run: Callable[[Any], AttackOutcome]
    knowledge: str
    description: str
    params: type | None = None  # a pydantic model: `attack.<name>` in the experiment
    scenarios: tuple[str, ...] = SCENARIOS
    attackers: tuple[str, ...] = ATTACKERS
    reads_features: bool = False  # trains the attack network on attack.features
    reads_uploads: bool = False  # reads individual uploads: refused under secure aggregation
    # check(experiment) refuses with ValueError("needs ..."), read as "the <name> attack needs ..."
    check: Callable[[Any], None] | None = field(default=None, compare=False)

    def refusal(self, exp: Any) -> str | None:
        """Why this attack cannot run in `exp` (one line), or None."""
        if exp.scenario not in self.scenarios:
            return (f"attack.attacks: the {self.name} attack is for the "
                    f"{' or '.join(self.scenarios)} scenario, not {exp.scenario!r}")
        attacker = attacker_of(exp)
        if attacker not in self.attackers:
            return (f"attack.attacks: the {self.name} attack is for the "
                    f"{' or '.join(self.attackers)} attacker, not the {attacker} one")
        hider = defences.hiding_uploads(exp) if self.reads_uploads and getattr(
            exp, "federation", None) is not None else None
        if hider is not None:
            return (f"attack.attacks: the {self.name} attack reads each participant's upload, "
                    f"which {hider.name} ({hider.key}) hides from the aggregator: it sees "
                    "only their sum")
        if self.check is not None:
            try:
                self.check(exp)
            except ValueError as err:
                return f"attack.attacks: the {self.name} attack {err}"
        return None


_REGISTRY: dict[str, Attack] = {}
_builtins_loaded = False
_plugins_failed: str | None = None  # why an entry point could not be loaded, said every time


class PluginError(ValueError):
    """An attack plug-in (entry point) that cannot be loaded; one line naming it."""


def register(name: str, *, knowledge: str, description: str, params: type | None = None,
             scenarios: tuple[str, ...] = SCENARIOS, attackers: tuple[str, ...] = ATTACKERS,
             reads_features: bool = False, reads_uploads: bool = False,
             check: Callable[[Any], None] | None = None) -> Callable:
    """Register the decorated run function as attack `name` (see the module docstring)."""
    if knowledge not in KNOWLEDGE:
        raise ValueError(f"attack {name!r}: knowledge {knowledge!r} is not one of "
                         f"{', '.join(KNOWLEDGE)}")
    unknown = sorted(set(scenarios) - set(SCENARIOS)) + sorted(set(attackers) - set(ATTACKERS))
    if unknown or not scenarios or not attackers:
        raise ValueError(f"attack {name!r}: unknown or no scenarios/attackers {unknown}")
    if params is not None and not hasattr(params, "model_validate"):
        raise ValueError(f"attack {name!r}: params must be a pydantic model")

    def decorate(run: Callable[[Any], AttackOutcome]) -> Callable[[Any], AttackOutcome]:
        if name in _REGISTRY:
            raise ValueError(f"attack {name!r} is already registered "
                             f"(by {_REGISTRY[name].run.__module__})")
        _REGISTRY[name] = Attack(name, run, knowledge, description, params, tuple(scenarios),
                                 tuple(attackers), reads_features=reads_features,
                                 reads_uploads=reads_uploads, check=check)
        return run

    return decorate


def unregister(name: str) -> None:
    """Remove attack `name` (for tests that register a toy attack)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    """The built-in attacks, then those of the installed packages' entry points, once; an
    entry point that raises is reported (PluginError) by every later call too."""
    global _builtins_loaded, _plugins_failed
    if not _builtins_loaded:
        _builtins_loaded = True
        importlib.import_module(BUILTINS)
        _plugins_failed = _load_entry_points()
    if _plugins_failed is not None:
        raise PluginError(_plugins_failed)


def _load_entry_points() -> str | None:
    """Import every module of the ``fedattack.attacks`` entry points; why one failed, or None."""
    for point in entry_points(group=ENTRY_POINTS):
        try:
            point.load()
        except Exception as err:
            text = " ".join(str(err).split())[:200]
            return (f"the attack plug-in {point.name!r} = {point.value!r} (entry point of group "
                    f"{ENTRY_POINTS}) raised {type(err).__name__}: {text}; fix or uninstall "
                    "its package")
    return None


def load_plugins(modules: list[str], field: str = "plugins") -> None:
    """Import the attack modules named in the experiment (`attack.plugins`), which register
    their attacks; ValueError starting with `field` (a module that cannot be imported)."""
    from fedattack.usercode import import_module  # the package's code, imported only when used

    for module in modules:
        import_module(module, field)


def registered() -> dict[str, Attack]:
    """Every registered attack by name, the built-in ones first in their declared order."""
    _load_builtins()
    return dict(_REGISTRY)


def names() -> list[str]:
    return list(registered())


def get(name: str) -> Attack:
    """The attack called `name`; ValueError naming the accepted ones otherwise."""
    attacks = registered()
    if name in attacks:
        return attacks[name]
    close = difflib.get_close_matches(name, list(attacks), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown attack {name!r}{hint} (accepted: {', '.join(attacks)})")


def attacker_of(exp: Any) -> str:
    """Who observes in `exp`: the stand-alone attacker, the aggregator or a participant."""
    if exp.scenario in ("standalone", "finetune"):
        return "standalone"
    return "global" if exp.attacker is not None and exp.attacker.kind == "global" else "local"
