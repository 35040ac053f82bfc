"""Declared record fields: how each field of a result record enters the mean over victims,
whether it is a figure (rounded when written), and its key in results.json.

A record is a frozen dataclass every field of which is made by :func:`declared`; the result row
(:class:`fedattack.results.ResultRow`) and the records it holds (the attack's figures,
:class:`fedattack.metrics.AttackMetrics`; a DP audit, :class:`fedattack.audit.Audit`) are such
records. :func:`to_json` and :func:`from_json` write and read any of them; the mean over victims
(:func:`fedattack.results.mean_record`) is built from the declarations alone, so a field that
declares no role is an error, never a value copied from the first victim's row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields, is_dataclass
from enum import StrEnum
from typing import Any

SIGNIFICANT_DIGITS = 6  # a written figure keeps this many significant digits
FIGURE_RELATIVE_RESOLUTION = 10.0 ** (1 - SIGNIFICANT_DIGITS)  # the largest relative rounding


class Mean(StrEnum):
    """How a field enters the row of the mean over victims."""

    AVERAGED = "averaged"  # the mean over the victims; None where a victim has none
    SUMMED = "summed"  # counts of the victims' targets
    SHARED = "shared"  # the same in every victim's row by construction; checked, kept
    COMMON = "common"  # kept where every victim's row agrees (e.g. the observed rounds, which
    # client sampling can make differ), left out otherwise
    LARGEST = "largest"  # the largest over the victims (the coarsest resolution)
    ANY = "any"  # a flag, raised in the mean where any victim's row raised it
    PER_VICTIM = "per-victim"  # of one victim only: left out of the mean row
    INTERVAL = "interval"  # recomputed: the percentile interval of the mean of the victims'
    # bootstrap resamples of the figure it belongs to (``of``)
    DRAWS = "draws"  # the bootstrap resamples themselves (in memory, never written): averaged
    NESTED = "nested"  # a record of its own, averaged field by field (None where any is None)
    DERIVED = "derived"  # computed from the mean row's own figures by the mean's builder


def declared(mean: Mean, *, figure: bool = False, key: str | None = None,
             optional: bool = False, flatten: bool = False, written: bool = True,
             record: type | None = None, of: str | None = None,
             load: Callable[[Any], Any] | None = None, default: Any = MISSING,
             default_factory: Any = MISSING, compare: bool = True) -> Any:
    """A record field and its declaration: `mean` its role in the mean over victims; `figure`,
    rounded to SIGNIFICANT_DIGITS when written; `key` its results.json key (default: its name);
    `optional`, left out of results.json when None; `flatten`, a record (or dict) whose keys are
    written beside the row's own; `written` False: kept in memory only; `record`, the class of a
    nested record; `of`, the figure an interval belongs to; `load`, applied to the value read."""
    metadata = {"mean": Mean(mean), "figure": figure, "key": key, "optional": optional,
                "flatten": flatten, "written": written, "record": record, "of": of,
                "load": load}
    return field(default=default, default_factory=default_factory, metadata=metadata,
                 repr=written, compare=compare)


def role(f: Field) -> Mean:
    """The declared role of field `f`; TypeError for a field made without :func:`declared`."""
    if "mean" not in f.metadata:
        raise TypeError(f"field {f.name!r} declares no role in the mean over victims")
    return f.metadata["mean"]


def json_key(f: Field) -> str:
    return f.metadata.get("key") or f.name


def rounded(value: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """`value` with every float in it (in lists, tuples and dicts too) kept to `digits`
    significant digits; tuples become lists, as JSON writes them."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    """Tuples as lists, as JSON writes them."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_json(record: Any, round_figures: bool = True) -> dict[str, Any]:
    """`record` as results.json holds it: by key, nested records as objects (or flattened),
    figures rounded (unless `round_figures` is False), optional fields that are None left out."""
    out: dict[str, Any] = {}
    for f in fields(record):
        m = f.metadata
        role(f)
        value = getattr(record, f.name)
        if not m["written"] or (value is None and m["optional"]):
            continue
        if is_dataclass(value):
            value = to_json(value, round_figures)
        elif m["figure"] and round_figures:
            value = rounded(value)
        else:
            value = _plain(value)
        if m["flatten"]:
            out.update(value)
        else:
            out[json_key(f)] = value
    return out


def written_keys(cls: type) -> set[str]:
    """The results.json keys a record class writes (its flattened records' too)."""
    keys: set[str] = set()
    for f in fields(cls):
        if not f.metadata["written"]:
            continue
        if f.metadata["flatten"] and f.metadata["record"] is not None:
            keys |= written_keys(f.metadata["record"])
        elif not f.metadata["flatten"]:
            keys.add(json_key(f))
    return keys


def from_json(cls: type, data: dict[str, Any]) -> tuple[Any, set[str]]:
    """A `cls` record from its results.json form, and the keys of `data` it read. A nested
    record absent or null is None; a field absent takes its default (TypeError if it has none).
    Flattened dicts (a row's ``extra``) are left to the caller, who knows what is left over."""
    values: dict[str, Any] = {}
    used: set[str] = set()
    for f in fields(cls):
        m = f.metadata
        role(f)
        if not m["written"]:
            continue
        if m["flatten"] and m["record"] is not None:
            if m["optional"] and not set(data) & written_keys(m["record"]):
                values[f.name] = None  # an optional flattened record none of whose keys is here
                continue
            values[f.name], read = from_json(m["record"], data)
            used |= read
            continue
        if m["flatten"] or json_key(f) not in data:
            continue
        value = data[json_key(f)]
        used.add(json_key(f))
        if value is not None and m["record"] is not None:
            value, read = from_json(m["record"], value)
            unknown = set(data[json_key(f)]) - read
            if unknown:
                raise ValueError(f"{json_key(f)}: unknown key(s) {sorted(unknown)}")
        elif value is not None and m["load"] is not None:
            value = m["load"](value)
        values[f.name] = value
    return cls(**values), used
