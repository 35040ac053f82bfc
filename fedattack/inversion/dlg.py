"""Deep Leakage from Gradients (Zhu et al., NeurIPS 2019): dummy records and dummy soft labels,
optimised together with L-BFGS so that the update they produce matches the observed one in L2.

Knows: the architecture, the broadcast and uploaded weights, the local recipe and the number of
records; not the records, not their labels (the labels are optimised as softmax distributions and
read off by their argmax). Threat model: honest-but-curious server.

`iterations` counts objective evaluations (L-BFGS's strong-Wolfe line search evaluates the
objective more than once per iteration), so that its cost compares with the other attacks'.
DLG's loss is the squared L2 distance; here it is divided by the observed update's squared norm,
which changes nothing but the scale L-BFGS sees (a small learning rate makes updates tiny).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

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


class DLGParams(AttackParams):
    iterations: PositiveInt = 300
    lr: PositiveFloat = 1.0
    seed: NonNegativeInt = 0


def lbfgs(objective: Callable[[], torch.Tensor], variables: list[torch.Tensor],
          iterations: int, lr: float) -> tuple[float, int]:
    """Minimise `objective` over `variables` with L-BFGS for `iterations` evaluations; a run
    that stops early (a direction that does not descend, a line search that found no step) is
    restarted from where it stopped with a fresh memory, until the budget is spent or a fresh
    run cannot move. The variables are left at the best finite point seen (L-BFGS can diverge
    to NaN). Returns that loss and the evaluations made."""
    import torch

    best = {"loss": math.inf, "values": [v.detach().clone() for v in variables]}
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        for v in variables:
            v.grad = None
        loss = objective().sum()
        loss.backward()
        evaluations += 1
        value = loss.item()
        if math.isfinite(value) and value < best["loss"]:
            best.update(loss=value, values=[v.detach().clone() for v in variables])
        return loss

    while evaluations < iterations:
        left, before = iterations - evaluations, best["loss"]
        torch.optim.LBFGS(variables, lr=lr, max_iter=left, max_eval=max(left - 1, 1),
                          history_size=100,
                          tolerance_grad=0.0, tolerance_change=0.0,
                          line_search_fn="strong_wolfe").step(closure)
        with torch.no_grad():  # go on from the best point, not from a diverged one
            for variable, value in zip(variables, best["values"], strict=True):
                variable.copy_(value)
        if best["loss"] >= before:
            break
    return best["loss"], evaluations


@register("dlg", params=DLGParams, threat_model=HONEST_BUT_CURIOUS,
          knowledge=UPDATE_KNOWLEDGE + "; not the labels (optimised)",
          description="DLG (Zhu et al. 2019): records and soft labels by L-BFGS, L2 matching")
def dlg(target: InversionTarget, params: DLGParams,
        device: torch.device | str = "cpu") -> Reconstruction:
    import torch

    from fedattack.inversion.core import Reconstruction, UpdateMatcher

    started = time.perf_counter()
    matcher, generator = UpdateMatcher.seeded(target, params.seed, device)
    x = matcher.random_records(1, generator).requires_grad_()
    label_shape = (1, target.num_records, target.num_classes)
    label_logits = torch.randn(label_shape, generator=generator).to(matcher.device)
    label_logits.requires_grad_()
    loss, evaluations = lbfgs(lambda: matcher.distances(x, label_logits.softmax(-1), "l2"),
                              [x, label_logits], params.iterations, params.lr)
    return Reconstruction(x.detach()[0].cpu(), label_logits.detach()[0].argmax(-1).cpu(), loss,
                          [loss], evaluations, time.perf_counter() - started, "optimised")
