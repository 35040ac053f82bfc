"""The `model:` and `training:` blocks: the target model and how it is trained."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from fedattack.config.base import PositiveInt, Steps, Strict
from fedattack.config.builtins import MODELS
from fedattack.config.code import FilePath, ObjectRef

DEFAULT_ARCH = "purchase-fc"
# Passed by fedattack from the dataset to a factory whose signature names them.
DATASET_ARGUMENTS = ("input_shape", "num_classes")


class ModelConfig(Strict):
    """The target model: a built-in architecture (`arch`, see fedattack.models) or the user's
    own (`factory`: a class or function returning an `nn.Module`, see fedattack.models.factory).

    A factory is called with `kwargs`, plus `input_shape` (the dataset's record shape, e.g.
    `(1, 28, 28)`) and `num_classes` where its signature names them. Its module is imported from
    `python_path` (or wherever Python finds it) in the driver and in every participant.
    `weights` is a model trained elsewhere (safetensors or a torch state dict) that the
    stand-alone scenario audits instead of training one (`fedattack attack`).
    """

    arch: str | None = Field(default=DEFAULT_ARCH, description="a built-in model; unset when "
                             "factory is given")
    activation: Literal["tanh", "relu"] = Field(
        default="tanh", description="of the built-in FC nets (a factory takes its own kwargs)")
    factory: ObjectRef | None = Field(
        default=None, description="'package.module:callable' returning an nn.Module")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the factory (YAML values)")
    weights: FilePath | None = Field(
        default=None, description="stand-alone audit: the trained model's weights (.safetensors, "
        "or a torch state dict .pt/.pth read with weights_only), attacked without training")

    @model_validator(mode="before")
    @classmethod
    def _factory_replaces_arch(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("factory") is not None and "arch" not in data:
            data = {**data, "arch": None}
        return data

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, name: str | None) -> str | None:
        if name is not None and name not in MODELS:  # fedattack.models' names, without torch
            raise ValueError(f"unknown model {name!r}; accepted: {', '.join(MODELS)}, "
                             "or your own with model.factory")
        return name

    @model_validator(mode="after")
    def _one_model(self) -> ModelConfig:
        if (self.arch is None) == (self.factory is None):
            raise ValueError("give model.arch (a built-in model) or model.factory (your own), "
                             "not both" if self.arch else "give model.arch or model.factory")
        if self.kwargs and self.factory is None:
            raise ValueError("kwargs: for model.factory; a built-in arch takes none")
        given = sorted(set(self.kwargs) & set(DATASET_ARGUMENTS))
        if given:
            raise ValueError(f"kwargs: {', '.join(given)} come from the dataset (passed to "
                             "a factory whose signature names them); remove them")
        return self

    def identity(self) -> dict[str, Any]:
        """What makes two models the same architecture (reference models are cached by it)."""
        if self.factory is None:
            return {"arch": self.arch, "activation": self.activation}
        return {"factory": self.factory, "kwargs": self.kwargs}

    def label(self) -> str:
        return self.arch or self.factory


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

