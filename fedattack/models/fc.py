"""The fully connected target model of Nasr et al. for Purchase100 and Texas100 (Section III-B).

Purchase100: 600 -> 1024 -> 512 -> 256 -> 128 -> 100; Texas100: 6169 -> 1024 -> ... -> 100.
The authors' released code uses Tanh between the layers; ReLU is offered as an option.
"""

from __future__ import annotations

import math

import torch
from torch import nn

HIDDEN_SIZES = (1024, 512, 256, 128)
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class FCNet(nn.Module):
    """Input (flattened) -> 1024 -> 512 -> 256 -> 128 -> num_classes, an activation between.

    Hidden layers are `features.0, features.2, ...`; the output layer is `classifier`.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        activation: str = "tanh",
        hidden: tuple[int, ...] = HIDDEN_SIZES,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; accepted: tanh, relu")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(torch.flatten(x, 1)))


def build_fc(input_shape: tuple[int, ...], num_classes: int, activation: str = "tanh") -> FCNet:
    return FCNet(math.prod(input_shape), num_classes, activation)
