"""What an experiment can name, read from where each is defined: the datasets' and models'
registries, the attack registry (user attacks registered through entry points included),
Flower's strategies and the defences, each with the YAML key that selects it. `fedattack list`
prints it."""

from __future__ import annotations

from dataclasses import dataclass

from fedattack import defences as defence_registry
from fedattack.config import STRATEGY_PARAMETERS


@dataclass(frozen=True)
class Section:
    title: str
    key: str  # where an experiment names one, e.g. data.dataset ("": each row says its key)
    rows: list[tuple[str, str]]  # (name, what it is; "" where the name says it)


# The defences, by the experiment key that turns each on (each defence's module says it:
# fedattack.defences).
DEFENCES = tuple((d.name, d.key, d.what) for d in defence_registry.DEFENCES)


def datasets() -> Section:
    from fedattack.data import dataset_names, obtained_by

    return Section("datasets", "data.dataset",
                   [(name, obtained_by(name)) for name in dataset_names()])


def models() -> Section:
    from fedattack.models import model_names

    return Section("models", "model.arch", [(name, "") for name in model_names()])


def attacks() -> Section:
    from fedattack.attack_registry import registered

    rows = [(a.name, a.description) for a in registered().values()]
    rows.append(("gan", "Hitaj et al.: a participant's GAN reconstructs another's class "
                        "(its own section, `gan:`)"))
    return Section("attacks", "attack.attacks", rows)


def strategies() -> Section:
    return Section("strategies", "federation.strategy",
                   [(name, f"parameters: {', '.join(params)}" if params else "no parameters")
                    for name, params in STRATEGY_PARAMETERS.items()])


def defences() -> Section:
    return Section("defences", "", [(name, f"{key}: {what}") for name, key, what in DEFENCES])


def catalogue() -> list[Section]:
    return [datasets(), models(), attacks(), strategies(), defences()]
