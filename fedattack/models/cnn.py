"""Small convolutional nets for 28x28 / 32x32 images, and the one Hitaj et al. attacked.

`SmallCNN` ("cnn"): a fast CPU baseline for MNIST / Fashion-MNIST / CIFAR-sized inputs,
    conv 32@5x5 (pad 2) - ReLU - maxpool 2 - conv 64@5x5 (pad 2) - ReLU - maxpool 2
    - FC 128 - ReLU - FC classes.
    On 1x28x28 that is 3136 -> 128 after the convolutions, about 0.42M parameters.
`HitajCNN` ("cnn-gan"): the Tanh net of Hitaj et al.'s MNIST experiments (CCS 2017),
    conv 32@5x5 - Tanh - maxpool 3x3 stride 3 - conv 64@5x5 - Tanh - maxpool 2x2
    - FC 200 - Tanh - FC classes, no padding.
    On 1x28x28 the convolutions leave 64x2x2; on the AT&T faces (1x112x92) 64x16x12.

Both size their first fully connected layer with a dummy forward pass at build time.
"""

from __future__ import annotations

import torch
from torch import nn


def image_shape(input_shape: tuple[int, ...], arch: str) -> tuple[int, int, int]:
    """Check that `input_shape` is (channels, height, width) and return it as ints."""
    if len(input_shape) != 3 or any(int(s) <= 0 for s in input_shape):
        raise ValueError(
            f"{arch} needs an image input shape (channels, height, width), got {input_shape}"
        )
    c, h, w = (int(s) for s in input_shape)
    return c, h, w


def flat_size(features: nn.Module, input_shape: tuple[int, int, int], arch: str) -> int:
    """Number of features `features` produces per example, from one dummy forward pass."""
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, *input_shape))
    except RuntimeError as err:
        raise ValueError(f"input shape {input_shape} is too small for {arch}: {err}") from None
    finally:
        features.train(was_training)
    if out.numel() == 0:
        raise ValueError(f"input shape {input_shape} is too small for {arch}")
    return out[0].numel()


class SmallCNN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        shape = image_shape(input_shape, "cnn")
        self.features = nn.Sequential(
            nn.Conv2d(shape[0], 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.hidden = nn.Linear(flat_size(self.features, shape, "cnn"), 128)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.classifier(torch.relu(self.hidden(x)))


class HitajCNN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        shape = image_shape(input_shape, "cnn-gan")
        self.features = nn.Sequential(
            nn.Conv2d(shape[0], 32, kernel_size=5),
            nn.Tanh(),
            nn.MaxPool2d(kernel_size=3, stride=3),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.Tanh(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.hidden = nn.Linear(flat_size(self.features, shape, "cnn-gan"), 200)
        self.classifier = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return self.classifier(torch.tanh(self.hidden(x)))
