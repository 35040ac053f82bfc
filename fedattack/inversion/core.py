"""What a reconstruction attack takes and returns, and the matching objective they share.

An attack takes an :class:`InversionTarget`: the architecture, the weights the aggregator
broadcast, the weights the victim uploaded, the victim's local recipe and the data's pixel range.
It never sees how these arrived (a run directory, a Flower message, a test), and it returns a
:class:`Reconstruction`: dummy records in model-input space with the labels it assigned them.

:class:`UpdateMatcher` turns dummy records into the update the victim would have uploaded had it
trained on them (fedattack.inversion.recipe.local_update), for R restarts at once with
`torch.func.vmap`, and scores it against the observed update: the L2 distance of DLG (relative
to the observed update's norm, so that it does not scale with the learning rate) or the cosine
distance of Inverting Gradients (over all parameters as one vector, as Geiping et al.). Under
secure aggregation the observed update is the FedAvg average of several participants' updates
(`InversionTarget.shares`): the dummy records are then split among as many re-enacted
participants, whose updates are averaged with the same weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.func import replace_all_batch_norm_modules_, vmap

from fedattack.inversion.recipe import LocalRecipe, Params, local_update

EPS = 1e-12


@dataclass(frozen=True)
class InversionTarget:
    """One observed update of one victim: what every reconstruction attack reads."""

    model: nn.Module  # the architecture; its own weights are never read
    broadcast: Mapping[str, torch.Tensor]  # state_dict the victim received
    upload: Mapping[str, torch.Tensor]  # state_dict the victim sent back
    recipe: LocalRecipe
    input_shape: tuple[int, int, int]
    num_classes: int
    low: torch.Tensor  # (C,) the smallest pixel in model-input space (0 normalised)
    high: torch.Tensor  # (C,) the largest (1 normalised)
    shared_only: bool = False  # selective sharing: unchanged coordinates were not shared
    # the record counts of the participants whose FedAvg average the update is (secure
    # aggregation); None: one participant, the recipe's num_records
    shares: tuple[int, ...] | None = None

    @property
    def groups(self) -> tuple[int, ...]:
        return self.shares or (self.recipe.num_records,)

    @property
    def num_records(self) -> int:
        return sum(self.groups)


def pixel_range(mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high): pixels 0 and 1 after the normalisation (x - mean) / std."""
    mean = torch.as_tensor(mean, dtype=torch.float32)
    std = torch.as_tensor(std, dtype=torch.float32)
    return (0 - mean) / std, (1 - mean) / std


@dataclass
class Reconstruction:
    """Dummy records (model-input space) and their labels; the matching loss of the restart
    kept and of every restart, and what the optimisation cost."""

    x: torch.Tensor  # (n, C, H, W) on the CPU
    labels: torch.Tensor  # (n,) int64
    loss: float
    restart_losses: list[float]
    iterations: int
    seconds: float
    label_method: str


def flatten(update: Params, names: list[str]) -> torch.Tensor:
    return torch.cat([update[name].reshape(-1) for name in names])


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per restart: x is (R, n, C, H, W)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


class UpdateMatcher:
    """The victim's local training on dummy records, compared with the observed update."""

    def __init__(self, target: InversionTarget, device: torch.device | str = "cpu") -> None:
        self.target, self.device = target, torch.device(device)
        model = copy.deepcopy(target.model)
        # batch statistics as in training, no running-statistics update (which vmap refuses)
        replace_all_batch_norm_modules_(model)
        self.model = model.to(self.device).train()
        self.names = [name for name, _ in model.named_parameters()]
        self.start = {n: self._weights(target.broadcast, n) for n in self.names}
        self.buffers = {n: self._weights(target.broadcast, n) for n, _ in model.named_buffers()}
        uploaded = {n: self._weights(target.upload, n) for n in self.names}
        self.observed = flatten({n: uploaded[n] - self.start[n] for n in self.names}, self.names)
        if not torch.isfinite(self.observed).all():
            raise ValueError("the observed update holds NaN or Inf")
        self.mask = (self.observed != 0).float() if target.shared_only else None
        self.parts = self._parts(target)

    @staticmethod
    def _parts(target: InversionTarget) -> list[tuple[slice, LocalRecipe, float]]:
        """(dummy records, recipe, FedAvg weight) of each participant in the update."""
        parts, start = [], 0
        for share in target.groups:
            recipe = replace(target.recipe, num_records=share)
            parts.append((slice(start, start + share), recipe, share / target.num_records))
            start += share
        return parts

    def _weights(self, state: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
        if name not in state:
            raise ValueError(f"the observed weights have no {name!r}")
        return torch.as_tensor(state[name]).detach().to(self.device, torch.float32)

    def simulate(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(R, D): each restart's update, `x` (R, n, C, H, W), `labels` (n, K) shared by the
        restarts or (R, n, K)."""
        def one(xr: torch.Tensor, yr: torch.Tensor) -> torch.Tensor:
            return sum(weight * flatten(local_update(self.model, self.start, self.buffers,
                                                     xr[part], yr[part], recipe), self.names)
                       for part, recipe, weight in self.parts)

        simulated = vmap(one, in_dims=(0, 0 if labels.dim() == 3 else None))(x, labels)
        return simulated if self.mask is None else simulated * self.mask

    def cosine(self, simulated: torch.Tensor) -> torch.Tensor:
        """1 - cos(simulated, observed) per restart."""
        dot = simulated @ self.observed
        return 1 - dot / (simulated.norm(dim=1) * self.observed.norm() + EPS)

    def l2(self, simulated: torch.Tensor) -> torch.Tensor:
        """||simulated - observed||^2 / ||observed||^2 per restart."""
        return (simulated - self.observed).pow(2).sum(1) / (self.observed.pow(2).sum() + EPS)

    def distances(self, x: torch.Tensor, labels: torch.Tensor, metric: str) -> torch.Tensor:
        simulated = self.simulate(x, labels)
        return self.cosine(simulated) if metric == "cosine" else self.l2(simulated)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (…, C, H, W) clipped to the data's pixel range, in place."""
        shape = (-1, 1, 1)
        low = self.target.low.to(self.device).view(shape)
        high = self.target.high.to(self.device).view(shape)
        return x.clamp_(min=low, max=high)

    @classmethod
    def seeded(cls, target: InversionTarget, seed: int,
               device: torch.device | str) -> tuple[UpdateMatcher, torch.Generator]:
        """A matcher on `device` and the attack's random stream (CPU), from `seed`."""
        return cls(target, device), torch.Generator().manual_seed(seed)

    def random_records(self, restarts: int, generator: torch.Generator) -> torch.Tensor:
        """(R, n, C, H, W) standard normal dummy records (drawn on the CPU, for every device to
        start from the same ones)."""
        shape = (restarts, self.target.num_records, *self.target.input_shape)
        return torch.randn(shape, generator=generator).to(self.device)
