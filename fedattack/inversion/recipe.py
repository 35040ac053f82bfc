"""The victim's local training as the attacker re-enacts it: a differentiable function of the
dummy records (Geiping et al. 2020, Sec. 5; Dimitrov et al. 2022).

An honest participant (clients/honest.py) trains the broadcast model for `epochs` passes over
its `num_records` records in mini-batches of `batch_size`, with a fresh optimizer each round
(fedattack.training.make_optimizer: SGD with momentum or Adam, both with L2 weight decay) at the
round's learning rate, plus FedProx's proximal term when the strategy is FedProx. The attacker
knows all of that (the server sends the recipe) but not the records, nor the order they were
shuffled in: :func:`local_update` trains on the dummy records in a fixed order, batch ``k`` of
every epoch holding dummy records ``k * batch_size ..``. One local step (FedSGD) is the special
case ``num_records <= batch_size, epochs = 1``; there the update is exactly ``-lr`` times the
gradient (plus weight decay), so matching updates is matching gradients.

Everything here is functional (`torch.func.grad` over `functional_call`), so that `vmap` runs
several restarts of the attack as one batched computation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

if TYPE_CHECKING:
    from fedattack.config import Experiment

Params = dict[str, torch.Tensor]
ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which make_optimizer keeps
ADAM_EPS = 1e-8
TINY = 1e-30  # under Adam's square root: its derivative stays finite where a gradient is 0


@dataclass(frozen=True)
class LocalRecipe:
    """How the victim trains in one round: everything the attacker knows but the records."""

    num_records: int
    batch_size: int
    epochs: int = 1
    lr: float = 0.01
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0

    def __post_init__(self) -> None:
        if self.num_records < 1 or self.batch_size < 1 or self.epochs < 1:
            raise ValueError(f"a local recipe needs at least one record, batch and epoch, got "
                             f"{self.num_records}, {self.batch_size}, {self.epochs}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; accepted: sgd, adam")

    @classmethod
    def of_experiment(cls, exp: Experiment, server_round: int, num_records: int) -> LocalRecipe:
        """The recipe an honest participant of `exp` follows in `server_round` (1-based) with
        `num_records` records (the example count it reports)."""
        from fedattack.training import lr_at

        t, strategy = exp.training, exp.federation.strategy
        mu = strategy.proximal_mu if strategy.name == "fedprox" else None
        return cls(num_records, t.batch_size, exp.federation.local_epochs,
                   lr_at(t, server_round - 1), t.optimizer, t.momentum, t.weight_decay, mu or 0.0)

    @property
    def batches(self) -> list[slice]:
        """One epoch's batches, as slices of the dummy records."""
        return [slice(start, min(start + self.batch_size, self.num_records))
                for start in range(0, self.num_records, self.batch_size)]

    @property
    def steps(self) -> int:
        """Local optimizer steps in one round."""
        return self.epochs * math.ceil(self.num_records / self.batch_size)

    def describe(self) -> str:
        extra = f", momentum {self.momentum:g}" if self.optimizer == "sgd" and self.momentum else ""
        extra += f", weight decay {self.weight_decay:g}" if self.weight_decay else ""
        extra += f", proximal mu {self.proximal_mu:g}" if self.proximal_mu else ""
        return (f"{self.optimizer} at lr {self.lr:g}{extra}: {self.epochs} epoch(s) of "
                f"{self.num_records} records in batches of {self.batch_size} ({self.steps} steps)")


def soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against label distributions (one-hot rows give F.cross_entropy)."""
    return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def batch_loss(params: Params, model: nn.Module, buffers: Params, x: torch.Tensor,
               labels: torch.Tensor) -> torch.Tensor:
    return soft_cross_entropy(functional_call(model, (params, buffers), (x,)), labels)


def local_update(model: nn.Module, start: Params, buffers: Params, x: torch.Tensor,
                 labels: torch.Tensor, recipe: LocalRecipe) -> Params:
    """The parameters after the victim's local training on (`x`, `labels`) minus `start`:
    `x` holds `recipe.num_records` dummy records, `labels` their label distributions. Every
    step is differentiable in `x` and `labels`."""
    gradient = grad(batch_loss)
    params, state = start, {}
    step = 0
    for _ in range(recipe.epochs):
        for batch in recipe.batches:
            g = gradient(params, model, buffers, x[batch], labels[batch])
            params, state = optimizer_step(params, g, start, state, step, recipe)
            step += 1
    return {name: params[name] - start[name] for name in start}


def optimizer_step(params: Params, g: Params, start: Params, state: dict, step: int,
                   recipe: LocalRecipe) -> tuple[Params, dict]:
    """One step of torch's SGD (dampening 0, not Nesterov) or Adam, written out functionally;
    weight decay and the proximal term join the gradient first, as in fedattack.training."""
    new_params, new_state = {}, {}
    for name, p in params.items():
        d = g[name]
        if recipe.weight_decay:
            d = d + recipe.weight_decay * p
        if recipe.proximal_mu:
            d = d + recipe.proximal_mu * (p - start[name])
        if recipe.optimizer == "sgd":
            if recipe.momentum:
                d = d if step == 0 else recipe.momentum * state[name] + d
                new_state[name] = d
            new_params[name] = p - recipe.lr * d
            continue
        (b1, b2), t = ADAM_BETAS, step + 1
        m, v = state.get(name, (0.0, 0.0))
        m, v = b1 * m + (1 - b1) * d, b2 * v + (1 - b2) * d * d
        new_state[name] = (m, v)
        denom = torch.sqrt(v / (1 - b2**t) + TINY) + ADAM_EPS
        new_params[name] = p - recipe.lr * (m / (1 - b1**t)) / denom
    return new_params, new_state
