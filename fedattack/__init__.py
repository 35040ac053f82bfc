"""fedattack: a federated-learning privacy-attack testbed on Flower.

The Python API (fedattack.api) is exported here: ``fedattack.build_experiment``,
``fedattack.run``, ``fedattack.attack``, ``fedattack.open_run`` ... Importing the package imports
neither torch nor Flower: the API's names are loaded on first use.
"""

from fedattack._malloc import fix_mmap_threshold

__version__ = "0.1.0"

__all__ = ["Campaign", "Roc", "Run", "attack", "build_experiment", "check", "load", "open_run",
           "run"]

fix_mmap_threshold()


def __getattr__(name: str):
    if name in __all__:
        from fedattack import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedattack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
