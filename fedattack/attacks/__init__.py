"""Membership inference attacks, one module each, registered by name (fedattack.attack_registry).

Importing this package registers the built-in attacks, in this order: the Nasr et al. attack
network on white-box, output-layer and black-box features (`whitebox`), the shadow-model attack
(`shadow`), the unsupervised attack (`unsupervised`), loss and confidence thresholds
(`threshold`), LiRA (`lira`) and RMIA (`rmia`) against reference models (`references`), and the
federated attacks that read only the attacker's view: FedMIA (`fedmia`), Li et al.'s gradient
cosine and difference (`gradcos`) and the loss series over rounds (`loss_series`); the calibrated
white-box attack (`calibrated`), against the reference models or the other uploads; last, the
active attacker's own statistic, each target's response to the ascent (`ascent_response`).
An attack is added with one new module and one import line here (or, outside the package, by
importing a module that calls `fedattack.attack_registry.register`). An attack module imports
torch, scipy and scikit-learn inside the functions that use them, never at its top: importing
this package is what parsing an experiment does (tests/test_lazy_parse.py).
"""

from . import whitebox  # noqa: I001 (the import order is the order attacks are listed in)
from . import shadow, unsupervised, threshold, lira, rmia, fedmia, gradcos, loss_series
from . import calibrated
from . import ascent_response
from .lira import lira_offline, lira_online
from fedattack.attack_registry import AttackOutcome, register
from .rmia import rmia_scores
from .threshold import ThresholdAttack
from .unsupervised import UnsupervisedAttack
from .whitebox import FeatureSource, TensorSource, WhiteBoxAttack


def __getattr__(name: str):
    """`AttackNetwork` (an `nn.Module`) imported on first use: the attack modules import torch,
    scipy and scikit-learn only where they use them, so that registering the attacks (which
    parsing an experiment does) imports none of them."""
    if name == "AttackNetwork":
        from .network import AttackNetwork

        return AttackNetwork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AttackNetwork",
    "AttackOutcome",
    "ascent_response",
    "FeatureSource",
    "TensorSource",
    "ThresholdAttack",
    "UnsupervisedAttack",
    "WhiteBoxAttack",
    "calibrated",
    "fedmia",
    "gradcos",
    "lira",
    "lira_offline",
    "lira_online",
    "loss_series",
    "register",
    "rmia",
    "rmia_scores",
    "shadow",
    "threshold",
    "unsupervised",
    "whitebox",
]
