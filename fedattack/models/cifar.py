"""The CIFAR models Nasr et al. attacked: the CIFAR variants of bearpaw/pytorch-classification.

Module names follow bearpaw's, so its pretrained checkpoints load after stripping the
`module.` prefix DataParallel adds. Differences from bearpaw, none of which change a
32x32 forward pass:

- no in-place activations or additions (per-example gradients with torch.func.vmap);
- AlexNet's max-pools use `ceil_mode=True` (identical on the even sizes 32x32 produces) and its
  classifier input is sized by a dummy forward pass, so 1x28x28 and larger images work;
- ResNet and DenseNet end with an adaptive average pool instead of `AvgPool2d(8)`, which on
  32x32 inputs is the same 8x8 average;
- the input channel count comes from the input shape;
- DenseNet has no dropout (bearpaw's default `dropRate=0`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fedattack.models.cnn import flat_size, image_shape


class AlexNet(nn.Module):
    """bearpaw's CIFAR AlexNet: five convolutions with ReLU and max-pooling, one Linear."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        shape = image_shape(input_shape, "alexnet")
        self.features = nn.Sequential(
            nn.Conv2d(shape[0], 64, kernel_size=11, stride=4, padding=5),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True),
        )
        self.classifier = nn.Linear(flat_size(self.features, shape, "alexnet"), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _init_like_bearpaw(model: nn.Module) -> None:
    """He-normal convolutions (fan-out), unit BatchNorm scale and zero shift, as bearpaw does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class ResNet(nn.Module):
    """bearpaw's CIFAR ResNet with BasicBlocks: depth 6n+2, stages of 16, 32, 64 channels."""

    def __init__(self, depth: int, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        channels = image_shape(input_shape, f"resnet{depth}")[0]
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, 16, n, stride=1)
        self.layer2 = self._make_layer(16, 32, n, stride=2)
        self.layer3 = self._make_layer(32, 64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _init_like_bearpaw(self)

    @staticmethod
    def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(inplanes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Bottleneck(nn.Module):
    """DenseNet-BC layer: BN-ReLU-Conv1x1 (4k channels)-BN-ReLU-Conv3x3 (k), concatenated."""

    def __init__(self, inplanes: int, growth_rate: int, expansion: int = 4) -> None:
        super().__init__()
        planes = expansion * growth_rate
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), 1)


class Transition(nn.Module):
    def __init__(self, inplanes: int, outplanes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, outplanes, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(F.relu(self.bn1(x))), 2)


class DenseNet(nn.Module):
    """bearpaw's CIFAR DenseNet-BC: three dense blocks of (depth-4)/6 bottlenecks each,
    transitions with compression 0.5, growth rate k, a 2k-channel stem."""

    def __init__(
        self,
        depth: int,
        growth_rate: int,
        input_shape: tuple[int, ...],
        num_classes: int,
        compression_rate: int = 2,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"DenseNet-BC depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        self.growth_rate = growth_rate
        channels = image_shape(input_shape, f"densenet-bc-{depth}-{growth_rate}")[0]
        self.inplanes = 2 * growth_rate
        self.conv1 = nn.Conv2d(channels, self.inplanes, kernel_size=3, padding=1, bias=False)
        self.dense1 = self._make_denseblock(n)
        self.trans1 = self._make_transition(compression_rate)
        self.dense2 = self._make_denseblock(n)
        self.trans2 = self._make_transition(compression_rate)
        self.dense3 = self._make_denseblock(n)
        self.bn = nn.BatchNorm2d(self.inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        _init_like_bearpaw(self)

    def _make_denseblock(self, blocks: int) -> nn.Sequential:
        layers = []
        for _ in range(blocks):
            layers.append(Bottleneck(self.inplanes, self.growth_rate))
            self.inplanes += self.growth_rate
        return nn.Sequential(*layers)

    def _make_transition(self, compression_rate: int) -> Transition:
        inplanes, self.inplanes = self.inplanes, self.inplanes // compression_rate
        return Transition(inplanes, self.inplanes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = F.relu(self.bn(self.dense3(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))
