"""How much training the attack side of an experiment asks for, counted before anything runs.

Besides the target model, the attack stage trains LiRA's and RMIA's reference models and the GAN
measure's classifier. Their work is counted in record passes (records x epochs x models: one
forward and backward pass of one record), from the splits, and an experiment asking for more
than MAX_RECORD_PASSES (a few days of a CPU on the smallest model, and more than the largest
target training the config allows) is refused in one line with the figure, instead of running
until it is killed. The target's own training, also in record passes, is given beside it.
"""

from __future__ import annotations

import numpy as np

from fedattack.config import ConfigError, Experiment
from fedattack.data import Splits, knowledge_of

MAX_RECORD_PASSES = 10**10


def target_passes(exp: Experiment, splits: Splits) -> int:
    """Record passes of the target model's training (a federation: every sampled participant's
    local epochs, every round)."""
    if exp.scenario == "federated":
        per_round = sorted(len(p) for p in splits.partitions)[-exp.federation.sampled:]
        return sum(per_round) * exp.federation.local_epochs * exp.federation.rounds
    passes = len(splits.partitions[0]) * exp.training.epochs
    if exp.scenario == "finetune":
        passes += len(splits.partitions[1]) * exp.training.finetune_epochs
    return passes


def reference_passes(exp: Experiment, splits: Splits) -> tuple[int, str]:
    """Record passes of the reference models LiRA and RMIA train (a set per victim, offline
    and online apart), and how they add up."""
    from fedattack.attacks.references import REFERENCE_ATTACKS, population, reference_epochs

    names = [n for n in (exp.attack.attacks if exp.attack else []) if n in REFERENCE_ATTACKS]
    if not names:
        return 0, ""
    kinds = {n.rsplit("-", 1)[1] for n in names}  # "offline", "online"
    models, epochs = exp.attack.references.models, reference_epochs(exp)
    records = 0
    for victim in splits.victims:
        knowledge = knowledge_of(splits, victim.name)
        pool = population(knowledge)
        sizes = {"offline": len(pool), "online": len(np.union1d(pool, knowledge.targets))}
        records += sum(sizes[kind] // 2 for kind in kinds)
    return models * epochs * records, (f"{models:,} models x {epochs:,} epochs x {records:,} "
                                       "records")


def classifier_passes(exp: Experiment, splits: Splits) -> tuple[int, str]:
    """Record passes (at most) of the GAN measure's classifier, when it is a trained model:
    its epochs over the held-out records it learns from."""
    if exp.gan is None or exp.gan.classifier != "model":
        return 0, ""
    records = len(splits.nonmembers)
    return exp.gan.classifier_epochs * records, (
        f"{exp.gan.classifier_epochs:,} epochs x up to {records:,} records")


def check_work(exp: Experiment, splits: Splits) -> None:
    """ConfigError, naming the key and the figure, when the reference models or the GAN's
    classifier ask for more than MAX_RECORD_PASSES record passes of training."""
    target = target_passes(exp, splits)
    for key, (passes, how) in (("attack.references", reference_passes(exp, splits)),
                               ("gan.classifier_epochs", classifier_passes(exp, splits))):
        if passes > MAX_RECORD_PASSES:
            raise ConfigError(
                f"{key}: {how} make {passes:.1e} record passes of training, "
                f"{passes / max(target, 1):,.0f} times the target model's ({target:.1e}); "
                f"more than {MAX_RECORD_PASSES:.0e} is not run: lower the models or the epochs")
