"""DCGAN-style generator for the GAN attack of Hitaj et al.

Latent z -> Linear -> (C0, h0, w0) -> BN-ReLU -> k transposed convolutions (4x4, stride 2, each
doubling height and width; BN-ReLU between them) -> tanh -> crop to (H, W) -> affine map.

k is the number of doublings that brings the shorter side down to about 4-7 pixels at the start
(28x28: k=2 from 7x7; 32x32: k=3 from 4x4; 112x92: k=4 from 7x6, cropped from 112x96).
Channels halve at each doubling, from at most `max_channels` down to `base_channels`.

The tanh output lies in [-1, 1]; it is mapped affinely onto [low, high] (a number, or one per
channel) so that generated images live in the same normalised space as the dataset's inputs:
pass the smallest and largest value a normalised input can take.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from fedattack.models.cnn import image_shape


def _per_channel(value: float | Sequence[float], channels: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise ValueError(f"{name} needs 1 or {channels} values, got {t.numel()}")
    return t.reshape(channels, 1, 1).clone()


class Generator(nn.Module):
    def __init__(
        self,
        latent_dim: int,
        out_shape: tuple[int, ...],
        low: float | Sequence[float] = -1.0,
        high: float | Sequence[float] = 1.0,
        base_channels: int = 64,
        max_channels: int = 256,
    ) -> None:
        super().__init__()
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        c, h, w = image_shape(out_shape, "Generator")
        self.latent_dim = latent_dim
        self.out_shape = (c, h, w)
        doublings = max(1, int(math.floor(math.log2(min(h, w) / 4))))
        self._start = (math.ceil(h / 2**doublings), math.ceil(w / 2**doublings))
        chans = [
            min(max_channels, base_channels * 2 ** (doublings - 1 - i)) for i in range(doublings)
        ]
        self.project = nn.Linear(latent_dim, chans[0] * self._start[0] * self._start[1], bias=False)
        layers: list[nn.Module] = [nn.BatchNorm2d(chans[0]), nn.ReLU()]
        for cin, cout in pairwise(chans):
            layers += [
                nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
        layers += [nn.ConvTranspose2d(chans[-1], c, kernel_size=4, stride=2, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        low_t, high_t = _per_channel(low, c, "low"), _per_channel(high, c, "high")
        if bool((high_t <= low_t).any()):
            raise ValueError(f"high must exceed low, got low={low} high={high}")
        self.register_buffer("low", low_t, persistent=False)
        self.register_buffer("high", high_t, persistent=False)

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latent vectors from N(0, I) on this model's device (where `generator` must live)."""
        return torch.randn(n, self.latent_dim, generator=generator, device=self.low.device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], -1, *self._start)
        x = self.body(x)[:, :, : self.out_shape[1], : self.out_shape[2]]
        return self.low + (x + 1) * (0.5 * (self.high - self.low))
