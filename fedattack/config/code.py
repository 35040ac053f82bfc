"""References to the user's own code and files in a config: ``package.module:callable``,
``package.module``, file paths, and ``python_path``, the folders that code is imported from.

A reference is only checked for its form here (parsing a YAML imports no user code and no
torch); :mod:`fedattack.usercode` imports it where it is used. Relative file paths and folders are
made absolute against the working directory when the config is parsed, so the resolved config in
the run directory, which every Ray worker, SuperNode and ServerApp parses again, names the same
files wherever that process runs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
OBJECT_PATTERN = rf"^{_DOTTED}:{_DOTTED}$"
MODULE_PATTERN = rf"^{_DOTTED}$"


def _object_ref(ref: str) -> str:
    if not re.fullmatch(OBJECT_PATTERN, ref):
        raise ValueError(f"{ref!r} is not of the form 'package.module:callable'")
    return ref


def _module_name(name: str) -> str:
    if not re.fullmatch(MODULE_PATTERN, name):
        raise ValueError(f"{name!r} is not a module name of the form 'package.module'")
    return name


def absolute(path: str) -> str:
    """`path` made absolute against the working directory (``~`` expanded), as a string."""
    if not path or "\0" in path:
        raise ValueError(f"{path!r} is not a path")
    return str(Path(path).expanduser().absolute())


ObjectRef = Annotated[str, AfterValidator(_object_ref)]
ModuleName = Annotated[str, AfterValidator(_module_name)]
FilePath = Annotated[str, AfterValidator(absolute)]


def use_python_path(folders: list[str]) -> list[str]:
    """Put each folder of an experiment's ``python_path`` at the front of ``sys.path`` (once).

    Called when the experiment is parsed, so that every process that reads the experiment (the
    driver, each Ray worker, a SuperNode's ClientApp, the ServerApp of ``flwr run``) can import
    the user's model factory, data loader and attack plug-ins from the same folders."""
    resolved = [absolute(f) for f in folders]
    for folder in reversed(resolved):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return resolved
