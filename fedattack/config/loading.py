"""Reading YAML into config objects, and the one-line messages of what is wrong in it."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedattack.config.base import ConfigError, model_of
from fedattack.config.experiment import Experiment


def _is_union_tag(part: Any) -> bool:
    """Pydantic names the union member it tried in an error's location ("constrained-float",
    "dict[str,...]"); a user thinks in keys only."""
    return isinstance(part, str) and (part.startswith("constrained-") or "[" in part)


def _block_at(model: type[BaseModel], loc: list[Any]) -> type[BaseModel] | None:
    """The config block class that holds the last key of `loc` (e.g. FederationConfig)."""
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue  # a list index or a union tag
        model = model_of(field.annotation)
        if model is None:
            return None
    return model


def _unknown_key(model: type[BaseModel] | None, loc: list[Any]) -> str:
    """'unknown key', with the closest accepted key when one is close."""
    block = _block_at(model, loc) if model is not None else None
    if block is None or not loc:
        return "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), list(block.model_fields), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (accepted: {', '.join(block.model_fields)})"


def format_validation_error(err: ValidationError, source: str,
                             model: type[BaseModel] | None = None) -> str:
    first = err.errors()[0]
    loc = [p for p in first["loc"] if not _is_union_tag(p)]
    where = ".".join(str(p) for p in loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = _unknown_key(model, loc)
    elif first["type"] == "literal_error":
        msg = f"got {first.get('input')!r}; {msg.lower()}"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    keyed = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_.]*): (.*)", msg)
    if keyed:  # a block's validator naming its own key: "federation.rounds: ..."
        where = ".".join([str(p) for p in loc] + [keyed.group(1)])
        msg = keyed.group(2)
    return f"{source}: {where}: {msg}{more}"


class DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping (PyYAML keeps the last one silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a repeated key, naming it and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            line = key_node.start_mark.line + 1
            if first is not None:
                raise DuplicateKey(f"key {key!r} is given twice, on line {first} and line {line}; "
                                   "keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


MAX_DEPTH = 32  # an experiment or campaign is a few mappings and lists deep
TOO_DEEP = f"an experiment or campaign file is a few levels deep (at most {MAX_DEPTH})"


def too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `data` goes more than `limit` mappings and lists deep; counted without recursion,
    each shared node (a YAML alias) once per depth, so that neither depth nor aliases cost
    more than the document's size."""
    todo, seen = [(data, 1)], set()
    while todo:
        node, depth = todo.pop()
        if not isinstance(node, dict | list) or (id(node), depth) in seen:
            continue
        if depth > limit:
            return True
        seen.add((id(node), depth))
        todo.extend((child, depth + 1) for child in (
            node.values() if isinstance(node, dict) else node))
    return False


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line ConfigError."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.object[err.start]:#04x} at "
                          f"offset {err.start}); a YAML file is text") from None
    if "\0" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes); a YAML file is text")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKey as err:
        raise ConfigError(f"{path}: {err}") from None
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError(f"{path}: nested too deeply to read; {TOO_DEEP}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", err)
        raise ConfigError(f"{path}:{where} is not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if too_deep(data):
        raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep; {TOO_DEEP}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_experiment(data: dict[str, Any], source: str = "config") -> Experiment:
    """Validate a mapping as an Experiment, with a one-line error naming the bad field."""
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, Experiment)) from None


def load_experiment(path: str | Path) -> Experiment:
    return parse_experiment(load_yaml(path), str(path))


def experiment_yaml(exp: Experiment) -> str:
    """The fully resolved config (every default spelled out) as YAML."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)

