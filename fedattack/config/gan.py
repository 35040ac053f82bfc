"""The `gan:` and `privacy:` blocks: Hitaj et al.'s GAN attacker and the honest participants'
DP-SGD and selective sharing."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fedattack.config.base import NonNegInt, PositiveInt, Steps, Strict


class GanConfig(Strict):
    """The GAN attack of Hitaj et al. (CCS 2017) by participant `attacker`.

    From `start_round` on, the attacker trains a DCGAN-style generator so that the global model
    (its discriminator) assigns the generated samples to `victim_class`, then trains its local
    model on its own data plus `samples_per_round` generated samples labelled `fake_class`, and
    uploads. `fake_class` unset: the class the attacker declares is an extra output unit (the
    model gets num_classes + 1 outputs, as in the paper's MNIST and faces experiments).
    """

    attacker: NonNegInt = 0
    victim_class: NonNegInt = 0
    fake_class: NonNegInt | None = None
    start_round: PositiveInt = 1
    latent_dim: PositiveInt = 100
    base_channels: PositiveInt = Field(default=64, description="generator width (last layer)")
    generator_steps: Steps = Field(default=100, description="generator updates per round")
    generator_batch: PositiveInt = 64
    generator_lr: Annotated[float, Field(gt=0)] = 2e-4
    samples_per_round: PositiveInt = Field(
        default=256, description="generated samples the attacker trains on, labelled fake_class"
    )
    eval_samples: PositiveInt = Field(
        default=64, description="samples from fixed noise recorded each round for the measures"
    )
    classifier_epochs: Steps = Field(
        default=3, description="epochs of the independent classifier on held-out real data"
    )
    classifier: Literal["model", "eigenfaces"] = Field(
        default="model",
        description="the measures' independent classifier: `model`, the experiment's "
        "architecture trained from scratch (needs many held-out records per class); "
        "`eigenfaces`, PCA of its training images and a softmax on the projection (plus the "
        "distance from that face space), which learns from a few photographs per subject",
    )

    @model_validator(mode="after")
    def _distinct_classes(self) -> GanConfig:
        if self.fake_class == self.victim_class:
            raise ValueError("fake_class must differ from victim_class")
        return self

    def fake_label(self, num_classes: int) -> int:
        """The label the attacker gives its generated samples."""
        return num_classes if self.fake_class is None else self.fake_class


class PrivacyConfig(Strict):
    """Defences of the honest participants: DP-SGD through Opacus (Abadi et al.; Poisson
    sampling, per-sample clipping to `max_grad_norm`, Gaussian noise of `noise_multiplier` times
    that norm; epsilon at `delta` accounted over all rounds) and the selective sharing of Shokri
    and Shmatikov that Hitaj et al. attacked: only the `share_fraction` of parameters whose
    update is largest is uploaded, the others are sent back unchanged."""

    noise_multiplier: Annotated[float, Field(ge=0)] | None = Field(
        default=1.0, description="null: no DP-SGD (selective sharing only)"
    )
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    share_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
