"""Inverting Gradients (Geiping et al., NeurIPS 2020): cosine matching of the update, a total
variation prior, signed Adam with a stepped learning-rate decay, records kept in the data's pixel
range, several restarts; for one local step (FedSGD) and, through the re-enacted local training
of fedattack.inversion.recipe, for a FedAvg update of several local steps and epochs (their
Sec. 5).

The restarts run as one batched optimisation: the dummy records of all restarts are one tensor
(R, n, C, H, W), the victim's local training is `vmap`-ed over its first axis, and the summed
objective's gradient is each restart's own (the restarts share nothing; Adam is elementwise).
The restart kept is the one whose final cosine distance is lowest (Geiping et al.'s "loss"
scoring); the total-variation weight plays no part in that choice.

Knows: the architecture, the broadcast and uploaded weights, the local recipe, the number of
records and the data's pixel range (its normalisation); not the records; the labels it reads
from the last layer's update (fedattack.inversion.labels). Threat model: honest-but-curious
server.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from fedattack.inversion.registry import (
    HONEST_BUT_CURIOUS,
    UPDATE_KNOWLEDGE,
    AttackParams,
    register,
)

if TYPE_CHECKING:
    import torch

    from fedattack.inversion.core import InversionTarget, Reconstruction

# torch and the attack's machinery are imported where used: registering the attack (its name,
# params and threat model) stays cheap, so an experiment's inversion block parses without torch.

DECAY_AT = (3 / 8, 5 / 8, 7 / 8)  # fractions of the iterations where the learning rate drops
DECAY = 0.1


class InvertingParams(AttackParams):
    iterations: PositiveInt = 2000
    restarts: PositiveInt = 4
    lr: PositiveFloat = 0.1
    tv: NonNegativeFloat = 1e-2  # weight of the total-variation prior
    lr_decay: bool = True
    seed: NonNegativeInt = 0


def milestones(iterations: int) -> list[int]:
    return [int(f * iterations) for f in DECAY_AT]


@register("inverting-gradients", params=InvertingParams, threat_model=HONEST_BUT_CURIOUS,
          knowledge=UPDATE_KNOWLEDGE + ", the data's pixel range; labels read from the last "
          "layer's update",
          description="Inverting Gradients (Geiping et al. 2020): cosine matching, TV prior, "
          "signed Adam, batched restarts; one or several local steps")
def inverting_gradients(target: InversionTarget, params: InvertingParams,
                        device: torch.device | str = "cpu") -> Reconstruction:
    import torch

    from fedattack.inversion.core import Reconstruction, UpdateMatcher, total_variation
    from fedattack.inversion.labels import one_hot_labels

    started = time.perf_counter()
    matcher, generator = UpdateMatcher.seeded(target, params.seed, device)
    labels, soft, method = one_hot_labels(target, generator, matcher.device)
    x = matcher.clamp(matcher.random_records(params.restarts, generator)).requires_grad_()
    optimizer = torch.optim.Adam([x], lr=params.lr)
    decay = milestones(params.iterations) if params.lr_decay else []
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, decay, gamma=DECAY)
    for _ in range(params.iterations):
        optimizer.zero_grad(set_to_none=True)
        objective = matcher.distances(x, soft, "cosine") + params.tv * total_variation(x)
        objective.sum().backward()
        x.grad.sign_()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            matcher.clamp(x)
    with torch.no_grad():
        final = matcher.distances(x, soft, "cosine").cpu()
    best = int(torch.argmin(torch.nan_to_num(final, nan=float("inf"))))
    return Reconstruction(x.detach()[best].cpu(), labels, float(final[best]), final.tolist(),
                          params.iterations, time.perf_counter() - started, method)
