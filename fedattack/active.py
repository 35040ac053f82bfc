"""The active attackers' manipulation of a model: gradient ascent on target records (eq. 2).

Nasr et al., Section II-C: the attacker moves the parameters *up* the loss of the target records,
``W <- W + gamma * dL/dW``. A member target's loss is then pulled back down by its owner's next
local SGD step, a non-member's is not, so the two drift apart round after round (Fig. 7). The
malicious aggregator applies it to the model it broadcasts, a malicious participant to the model
it uploads; both call :class:`GradientAscent` on the model's weight list (Flower's order, the
``state_dict`` order), which changes parameters only, never buffers.

The step. The paper's ``gamma`` is in units of the loss gradient, which depend on the model's
scale: on a Fashion-MNIST `cnn` federation gamma = 1 keeps the global model at chance and gamma =
0.1 still costs 14 points of test accuracy. The relative step is stated in the round's own unit:
the ascent ``delta`` points along the gradient with ``||delta|| = fraction * ||U||``, U the
round's update (the model after the round's training minus the model it started from), per
parameter tensor or over all parameters. The absolute step is kept to reproduce the paper.

What is ascended. The attacker ascends its target records *and every record it knows*, members
and non-members of the victim alike, in one batch (:func:`ascended_records`): the attack models
and thresholds it fits on its known records then learn from records that were treated exactly as
the targets were (known and target records of a victim are random draws from the same sets).
With the targets alone ascended, the attack learnt from records the ascent never moved and was
scored on records it did (a white-box attack on real Fashion-MNIST fell below chance, AUC 0.406
[0.329, 0.477]).
The batch is the sorted union of the index sets, so which record is a known member and which a
known non-member never reaches the ascent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedattack.training import get_weights, set_weights

if TYPE_CHECKING:
    from fedattack.data import Knowledge


class GradientAscent:
    """``weights -> weights + delta``, delta along the gradient of the mean cross-entropy on the
    ascended records (the targets and the known records, :func:`ascended_records`).

    Args:
        model: a model of the target architecture (its weights are overwritten on each call).
        inputs, labels: the ascended records (their class labels: cross-entropy needs them).
        gamma: absolute step, ``delta = gamma * grad`` (the paper's eq. 2).
        fraction, norm: relative step, ``delta = fraction * ||U|| * grad / ||grad||`` with U the
            round's update (``weights - reference``), norms per parameter tensor
            (``norm="layer"``) or over all parameters (``"global"``).

    Exactly one of gamma and fraction is given. After each call ``last`` holds the ascended
    records' mean loss before the step (``ascended_loss``) and the norms of the step and of the
    update (over all parameters).
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                 gamma: float | None = None, *, fraction: float | None = None,
                 norm: str = "layer") -> None:
        if (gamma is None) == (fraction is None):
            raise ValueError("give exactly one of gamma (absolute step) and fraction (relative)")
        if norm not in ("layer", "global"):
            raise ValueError(f"norm is 'layer' or 'global', not {norm!r}")
        self.model, self.inputs, self.labels = model, inputs, labels
        self.gamma, self.fraction, self.norm = gamma, fraction, norm
        self.index = {name: i for i, name in enumerate(model.state_dict())}
        self.last: dict = {}

    @property
    def relative(self) -> bool:
        return self.fraction is not None

    def loss_and_grads(self, weights: list[np.ndarray]) -> tuple[float, dict[str, torch.Tensor]]:
        """Mean loss of the ascended records at `weights` and its gradient for every parameter
        (eval mode)."""
        set_weights(self.model, weights)
        self.model.eval()
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.inputs), self.labels)
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in self.model.named_parameters()
                 if p.grad is not None}
        return float(loss.detach()), grads

    def steps(self, weights: list[np.ndarray], reference: list[np.ndarray] | None
              ) -> tuple[float, dict[str, torch.Tensor], float | None]:
        """Ascended loss at `weights`, the step of each parameter and the update's norm."""
        loss, grads = self.loss_and_grads(weights)
        if not self.relative:
            return loss, {n: g * self.gamma for n, g in grads.items()}, None
        if reference is None:
            raise ValueError("a relative ascent step needs the model the round started from")
        update = {n: torch.from_numpy(np.asarray(weights[self.index[n]], np.float64)
                                      - np.asarray(reference[self.index[n]], np.float64))
                  for n in grads}
        update_norm = _norm(update.values())
        groups = [[n] for n in grads] if self.norm == "layer" else [list(grads)]
        steps = {}
        for names in groups:
            g = _norm(grads[n] for n in names)
            u = _norm(update[n] for n in names)
            scale = self.fraction * u / g if g > 0 else 0.0
            steps.update({n: grads[n] * scale for n in names})
        return loss, steps, update_norm

    def __call__(self, weights: list[np.ndarray],
                 reference: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """`weights` moved up the ascended records' loss; `reference`, the model the round
        started from, is needed by the relative step only."""
        loss, steps, update_norm = self.steps(weights, reference)  # loads `weights`
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in steps:
                    p.add_(steps[name].to(p.dtype))
        self.last = {"ascended_loss": loss, "step_norm": _norm(steps.values()),
                     "update_norm": update_norm}
        return get_weights(self.model)


def _norm(tensors) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def ascended_records(knowledge: Iterable[Knowledge]) -> np.ndarray:
    """The records an active attacker ascends: the targets and the known members and
    non-members of each of its victims, as one sorted array without repeats (their membership
    labels dropped)."""
    return np.unique(np.concatenate([np.concatenate([k.targets, k.known_members,
                                                     k.known_nonmembers]).astype(np.int64)
                                     for k in knowledge]))


def ascent_for(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
               attacker) -> GradientAscent:
    """The attacker's ascent (an ``AttackerConfig``'s step) on the given records (those of
    :func:`ascended_records`)."""
    return GradientAscent(model, inputs, labels, **attacker.ascent_step)
