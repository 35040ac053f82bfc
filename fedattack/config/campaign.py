"""Campaign files: experiments merged onto a base, times a sweep."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedattack.config.attack import AttackName
from fedattack.config.base import Accuracy, ConfigError, PositiveInt, SafeName, Strict, model_of
from fedattack.config.experiment import Experiment
from fedattack.config.loading import format_validation_error


class CampaignEntry(BaseModel):
    """One experiment of a campaign: a partial Experiment mapping, deep-merged onto the
    campaign's `base`, plus `paper`, the attack accuracies the paper reported for it (a fraction,
    0.746 for 74.6%). Its other keys are checked when the merged experiment is validated."""

    model_config = ConfigDict(extra="allow")

    name: SafeName
    paper: dict[AttackName, Accuracy | dict[str, Accuracy]] = Field(
        default_factory=dict, description="attack -> accuracy, or attack -> {victim: accuracy} "
        "where the paper reports one figure per victim (Table IX)")

    def overrides(self) -> dict[str, Any]:
        """The Experiment keys this entry sets."""
        return dict(self.model_extra or {})



def is_experiment_key(dotted: str, model: type[BaseModel] = Experiment) -> bool:
    """Whether `dotted` (e.g. "federation.num_participants") names a field of the Experiment."""
    head, _, rest = dotted.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    block = model_of(field.annotation)
    return block is not None and is_experiment_key(rest, block)


class Campaign(Strict):
    """A campaign file: experiments (each merged onto `base`) times the grid of `sweep`.

    The file is recognised by its top-level `campaign` key; see fedattack.campaign for how it is
    expanded and run.
    """

    campaign: SafeName
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    experiments: list[CampaignEntry] = Field(min_length=1)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    repeats: PositiveInt = Field(
        default=1, description="run each experiment with this many seeds (its seed, seed + 1, "
        "...); results.md gives each attack's mean and spread over them")

    @model_validator(mode="after")
    def _one_way_to_set_seeds(self) -> Campaign:
        if self.repeats > 1 and "seed" in self.sweep:
            raise ValueError("repeats and a sweep over seed both set the seeds; use one of them")
        return self

    @field_validator("base")
    @classmethod
    def _base_has_no_name(cls, base: dict[str, Any]) -> dict[str, Any]:
        if "name" in base:
            raise ValueError("an experiment's name comes from its entry, not from base")
        return base

    @field_validator("experiments")
    @classmethod
    def _unique_names(cls, entries: list[CampaignEntry]) -> list[CampaignEntry]:
        names = [e.name for e in entries]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"duplicate experiment names {repeated}")
        return entries

    @field_validator("sweep")
    @classmethod
    def _known_sweep_keys(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not sweep:
            raise ValueError("sweeps over no keys; leave it out to run each experiment once")
        for key, values in sweep.items():
            if key == "name" or not is_experiment_key(key):
                raise ValueError(f"unknown experiment key {key!r}; use dotted keys such as "
                                 "'federation.num_participants'")
            if not values:
                raise ValueError(f"{key!r} sweeps over no values")
        return sweep


def is_campaign(data: dict[str, Any]) -> bool:
    """A YAML mapping is a campaign when it has a top-level `campaign` key."""
    return "campaign" in data


def parse_campaign(data: dict[str, Any], source: str = "config") -> Campaign:
    """Validate a mapping as a Campaign, with a one-line error naming the bad field."""
    try:
        return Campaign.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, Campaign)) from None
