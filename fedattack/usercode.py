"""Importing the user's code named in a config (a model factory, a data loader, attack
plug-ins), with a one-line error naming the config field when it cannot be used.

The folders of the experiment's ``python_path`` are on ``sys.path`` by then (the config put them
there when it was parsed, see :func:`fedattack.config.code.use_python_path`).
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType
from typing import Any

from fedattack.config import ConfigError

MESSAGE_MAX = 300


# The config fields whose code or files a participant loads itself: a participant that cannot
# load them will not train in any round, so the run fails at once (user_code_failure).
PARTICIPANT_FIELDS = ("model.factory", "model.weights", "data.dataset", "attack.plugins",
                      "attack.attacks")
_FIELD = "|".join(re.escape(f) for f in PARTICIPANT_FIELDS)
_IN_FAILURE = re.compile(rf"((?:{_FIELD})(?:\.\w+)*: .*?)(?:'>|\n|\\n|$)")


class UserCodeError(ConfigError):
    """The user's code named in the config cannot be imported, built or run; the message is one
    line starting with the config field."""


def one_line(err: BaseException) -> str:
    """An exception as ``Type: message`` on one line, cut to a readable length."""
    text = " ".join(str(err).split())
    text = text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def import_module(name: str, field: str) -> ModuleType:
    """Import module `name` for config `field`; UserCodeError naming the field otherwise."""
    importlib.invalidate_caches()  # a module written since this process last looked
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(f"{err.name}.")):
            raise UserCodeError(f"{field}: cannot import module {name!r} ({err}); install it or "
                                "put its folder in python_path") from None
        raise UserCodeError(f"{field}: importing {name!r} failed ({one_line(err)})") from None
    except Exception as err:  # the user's module raised while it was imported
        raise UserCodeError(f"{field}: importing {name!r} failed ({one_line(err)})") from None


def import_object(ref: str, field: str) -> Any:
    """The callable `package.module:name` (a dotted name inside the module is followed)."""
    module_name, _, attribute = ref.partition(":")
    found: Any = import_module(module_name, field)
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise UserCodeError(f"{field}: module {module_name!r} has no {attribute!r}")
        found = getattr(found, part)
    if not callable(found):
        raise UserCodeError(f"{field}: {ref} is a {type(found).__name__}, not a callable")
    return found


def call(function: Any, ref: str, field: str, **kwargs: Any) -> Any:
    """`function(**kwargs)`, the user's exception turned into one line naming `field`."""
    try:
        return function(**kwargs)
    except Exception as err:
        raise UserCodeError(f"{field}: {ref} raised {one_line(err)}") from None


def user_code_failure(failure: str) -> str | None:
    """The one line a participant's UserCodeError (or data error) left in the text of a failed
    round's failure (Flower passes it on as ``<class ...>:<'message'>``), or None."""
    found = _IN_FAILURE.search(failure)
    return " ".join(found.group(1).split()) if found else None
