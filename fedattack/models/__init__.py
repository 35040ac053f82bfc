"""Target models in plain torch, registered by name.

    build_model("purchase-fc", (600,), 100)
    build_model("alexnet", (3, 32, 32), 100)

| name | model |
| --- | --- |
| `fc`, `purchase-fc`, `texas-fc` | Nasr et al.'s FC net: in -> 1024 -> 512 -> 256 -> 128 -> out |
| `alexnet` | bearpaw's CIFAR AlexNet |
| `resnet20`, `resnet32`, `resnet110` | bearpaw's CIFAR ResNet (BasicBlock) |
| `densenet-bc-100-12`, `densenet-bc-190-40` | bearpaw's CIFAR DenseNet-BC |
| `cnn` | small, fast CNN for 28x28 / 32x32 images |
| `cnn-gan` | the Tanh CNN of Hitaj et al.'s MNIST / AT&T faces experiments |

`activation` ("tanh" or "relu") applies to the FC nets only; the convolutional nets have the
activation of the architecture they reproduce. Image models take `input_shape` as
(channels, height, width) and work from 28x28 up. No model uses in-place operations, so
`torch.func.vmap` can compute per-example gradients (with BatchNorm in eval mode).

Every built model carries `input_shape` and `num_classes` attributes. A model of the user's own
comes from `model.factory` (see `fedattack.models.factory`); `build_target` builds either.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from fedattack.models.cifar import AlexNet, DenseNet, ResNet
from fedattack.models.cnn import HitajCNN, SmallCNN
from fedattack.models.fc import ACTIVATIONS, build_fc
from fedattack.models.gan import Generator

if TYPE_CHECKING:
    from fedattack.config import ModelConfig

Builder = Callable[[tuple[int, ...], int, str], nn.Module]


def _ignore_activation(cls: Callable[..., nn.Module], *args: int) -> Builder:
    return lambda input_shape, num_classes, activation: cls(*args, input_shape, num_classes)


MODELS: dict[str, Builder] = {
    "fc": build_fc,
    "purchase-fc": build_fc,
    "texas-fc": build_fc,
    "alexnet": _ignore_activation(AlexNet),
    "resnet20": _ignore_activation(ResNet, 20),
    "resnet32": _ignore_activation(ResNet, 32),
    "resnet110": _ignore_activation(ResNet, 110),
    "densenet-bc-100-12": _ignore_activation(DenseNet, 100, 12),
    "densenet-bc-190-40": _ignore_activation(DenseNet, 190, 40),
    "cnn": _ignore_activation(SmallCNN),
    "cnn-gan": _ignore_activation(HitajCNN),
}


def model_names() -> list[str]:
    return list(MODELS)


def build_model(
    arch: str, input_shape: tuple[int, ...], num_classes: int, activation: str = "tanh"
) -> nn.Module:
    """A freshly initialised model (seed torch's global RNG first for a reproducible one)."""
    if arch not in MODELS:
        raise ValueError(f"unknown model {arch!r}; accepted: {', '.join(MODELS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; accepted: {', '.join(ACTIVATIONS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    input_shape = tuple(int(s) for s in input_shape)
    return _described(MODELS[arch](input_shape, num_classes, activation), input_shape,
                      num_classes)


def build_target(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model of a `model:` block: its built-in arch, or the user's factory."""
    if cfg.factory is None:
        return build_model(cfg.arch, input_shape, num_classes, cfg.activation)
    from fedattack.models.factory import build_factory_model

    input_shape = tuple(int(s) for s in input_shape)
    return _described(build_factory_model(cfg.factory, cfg.kwargs, input_shape, num_classes),
                      input_shape, num_classes)


def _described(model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model with `input_shape` and `num_classes` attributes (a user's own are kept)."""
    for name, value in (("input_shape", input_shape), ("num_classes", num_classes)):
        if not hasattr(model, name):
            setattr(model, name, value)
    return model


PARAMETRISED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def layer_names(model: nn.Module) -> list[str]:
    """Names of the Linear and convolution modules, in forward order (BatchNorm excluded).

    The models here register their layers in the order forward() uses them, so this is
    module-registration order; tests check it against the order forward hooks fire in.
    """
    return [name for name, m in model.named_modules() if isinstance(m, PARAMETRISED_LAYERS)]


__all__ = ["MODELS", "Generator", "build_model", "build_target", "layer_names", "model_names"]
