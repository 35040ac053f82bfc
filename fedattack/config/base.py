"""The building blocks of every config block: strict models, bounded counts, safe names."""

from __future__ import annotations

import re
from typing import Annotated, Any, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, values are validated on assignment,
    floats must be finite (`lr: .inf` is refused) and a boolean is never taken for a number
    (`rounds: true` is refused, not read as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and _holds_bool(value) and not _takes_bool(field.annotation):
                    raise ValueError(f"{key}: got {value!r}; a boolean is not a number")
        return data


def _holds_bool(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(isinstance(v, bool) for v in value)
    return isinstance(value, bool)


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type accepts a boolean anywhere in it (`bool`, `bool | None`)."""
    if annotation is bool:
        return True
    return any(_takes_bool(a) for a in get_args(annotation) if not isinstance(a, bool))


# Counts are bounded: a typo such as `rounds: 1.0e+18` is refused, not run until killed.
MAX_COUNT = 10**9
MAX_STEPS = 100_000  # rounds and epochs
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Steps = Annotated[int, Field(gt=0, le=MAX_STEPS)]
# Experiment and campaign names: they become folder names, so each must be one plain path
# component: no separator, not "." or "..", no leading dot (a hidden folder).
NAME_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$"
NAME_MAX = 200  # below NAME_MAX of every common file system, with room for a temporary suffix


def _safe_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > NAME_MAX:
        raise ValueError(f"{name!r} is not a plain folder name: use letters, digits, '_', '-' "
                         f"and '.', not starting with '.', at most {NAME_MAX} characters")
    return name


SafeName = Annotated[str, AfterValidator(_safe_name)]

Unit = Annotated[float, Field(ge=0, lt=1)]
Accuracy = Annotated[float, Field(ge=0, le=1)]


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The config block class inside a field's annotation (`AttackConfig | None` included)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message is one line fit for a user."""

