"""The `model:` and `training:` blocks: the target model and how it is trained."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from fedattack.config.base import PositiveInt, Steps, Strict


class ModelConfig(Strict):
    """The target model architecture (see fedattack.models)."""

    arch: str = "purchase-fc"
    activation: Literal["tanh", "relu"] = "tanh"

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, name: str) -> str:
        from fedattack.models import model_names

        if name not in model_names():
            raise ValueError(f"unknown model {name!r}; accepted: {', '.join(model_names())}")
        return name


class TrainConfig(Strict):
    """How the target model is trained (Section III-B of Nasr et al.).

    Defaults are the FC set-up (Adam, lr 1e-3). The CIFAR set-up is SGD, lr 0.01 with
    `lr_milestones: [50, 100]`, `lr_gamma: 0.1` and `weight_decay: 5e-4`.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    lr_milestones: list[PositiveInt] = Field(
        default_factory=list, description="epochs (or rounds) at which lr is multiplied by lr_gamma"
    )
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    batch_size: PositiveInt = 64
    epochs: Steps = Field(default=30, description="stand-alone training epochs")
    finetune_epochs: Steps = Field(default=10, description="epochs of fine-tuning on D-delta")
    finetune_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.4, description="share of the training set held back as D-delta (paper: 0.4)"
    )

