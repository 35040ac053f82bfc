"""The active attackers' manipulation of a model: gradient ascent on target records (eq. 2).

Nasr et al., Section II-C: the attacker moves the parameters *up* the loss of the target records,
``W <- W + gamma * dL/dW``. A member target's loss is then pulled back down by its owner's next
local SGD step, a non-member's is not, so the two drift apart round after round (Fig. 7). The
malicious aggregator applies it to the model it broadcasts, a malicious participant to the model
it uploads; both call :class:`GradientAscent` on the model's weight list (Flower's order, the
``state_dict`` order), which changes parameters only, never buffers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedattack.training import get_weights, set_weights


class GradientAscent:
    """``weights -> weights + gamma * grad`` of the mean cross-entropy on the target records.

    Args:
        model: a model of the target architecture (its weights are overwritten on each call).
        inputs, labels: the target records.
        gamma: the step size.
    """

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor,
                 gamma: float) -> None:
        self.model, self.inputs, self.labels, self.gamma = model, inputs, labels, gamma

    def loss_and_grads(self, weights: list[np.ndarray]) -> tuple[float, dict[str, torch.Tensor]]:
        """Mean target loss at `weights` and its gradient for every parameter (eval mode)."""
        set_weights(self.model, weights)
        self.model.eval()
        self.model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(self.inputs), self.labels)
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in self.model.named_parameters()
                 if p.grad is not None}
        return float(loss.detach()), grads

    def __call__(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        _, grads = self.loss_and_grads(weights)
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if name in grads:
                    p.add_(grads[name], alpha=self.gamma)
        return get_weights(self.model)
