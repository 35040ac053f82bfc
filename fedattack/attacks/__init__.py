"""Membership inference attacks: the Nasr et al. white-box and unsupervised attacks, baselines.

``ATTACKS`` maps an attack's name to its factory: ``ATTACKS[name](**hyper_parameters)`` builds
an unfitted attack. An attack is added with one entry. The fit signatures differ by the knowledge
an attacker has: ``WhiteBoxAttack.fit(members, nonmembers)`` takes feature sources of known members
and non-members, ``UnsupervisedAttack.fit(source, summaries)`` unlabelled features and their
summaries, ``ThresholdAttack.fit(member_summaries, nonmember_summaries)`` summaries only.
"""

from functools import partial

from .lira import lira_offline, lira_online
from .network import AttackNetwork
from .rmia import rmia_scores
from .threshold import ThresholdAttack
from .unsupervised import UnsupervisedAttack
from .whitebox import FeatureSource, TensorSource, WhiteBoxAttack

ATTACKS = {
    "whitebox": WhiteBoxAttack,
    "unsupervised": UnsupervisedAttack,
    "threshold-loss": partial(ThresholdAttack, kind="loss"),
    "threshold-confidence": partial(ThresholdAttack, kind="confidence"),
    "threshold-logit-confidence": partial(ThresholdAttack, kind="logit-confidence"),
    "threshold-entropy": partial(ThresholdAttack, kind="entropy"),
}

__all__ = [
    "ATTACKS",
    "AttackNetwork",
    "lira_offline",
    "lira_online",
    "rmia_scores",
    "FeatureSource",
    "TensorSource",
    "ThresholdAttack",
    "UnsupervisedAttack",
    "WhiteBoxAttack",
]
