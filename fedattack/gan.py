"""The GAN attack of Hitaj et al. (CCS 2017): what the malicious participant computes.

The shared model is the discriminator. Each round the attacker trains a DCGAN-style generator so
that the received global model assigns its samples to the victim's class (the model is frozen:
only the generator moves), then labels fresh samples with the class it declared (the "fake"
class) and trains its local model on them together with its own real data. The federation thus
learns to tell the generator's samples from the victim's class, which makes the global model a
sharper discriminator for the next round.

Plain torch, no Flower: the client role (clients/gan_attacker.py) keeps the generator and its
optimizer between rounds as the tensors :func:`optimizer_tensors` returns.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedattack.config import GanConfig
from fedattack.data import Dataset
from fedattack.models import Generator

ADAM_BETAS = (0.5, 0.999)  # DCGAN's


def build_generator(cfg: GanConfig, dataset: Dataset, seed: int) -> Generator:
    """A fresh generator whose outputs span the dataset's normalised pixel range."""
    mean, std = np.asarray(dataset.mean), np.asarray(dataset.std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(cfg.latent_dim, dataset.input_shape, low=list(-mean / std),
                         high=list((1 - mean) / std), base_channels=cfg.base_channels)


def generator_optimizer(generator: Generator, cfg: GanConfig) -> torch.optim.Adam:
    return torch.optim.Adam(generator.parameters(), lr=cfg.generator_lr, betas=ADAM_BETAS)


def freeze(model: nn.Module) -> nn.Module:
    """The discriminator: eval mode, no gradient to its own parameters."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_generator(generator: Generator, discriminator: nn.Module,
                    optimizer: torch.optim.Optimizer, victim_class: int, steps: int,
                    batch_size: int, rng: torch.Generator) -> list[float]:
    """`steps` Adam steps on the cross-entropy of discriminator(generator(z)) against the victim
    class; returns the loss of each step. The discriminator must be frozen (see :func:`freeze`).
    """
    generator.train()
    target = torch.full((batch_size,), victim_class, dtype=torch.int64)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        logits = discriminator(generator(generator.noise(batch_size, rng)))
        loss = F.cross_entropy(logits, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def generate(generator: Generator, z: torch.Tensor) -> torch.Tensor:
    """Samples for latent vectors z. The generator always runs with batch statistics, as DCGAN
    generates, so its BatchNorm running averages never matter."""
    generator.train()
    return generator(z)


class WithGenerated:
    """A dataset extended by generated samples, all labelled `label`: index len(dataset) + i is
    sample i. What the attacker trains its local model on."""

    def __init__(self, dataset: Dataset, samples: torch.Tensor, label: int) -> None:
        self.dataset, self.samples, self.label = dataset, samples, label

    def indices(self) -> np.ndarray:
        """The indices of the generated samples."""
        return len(self.dataset) + np.arange(len(self.samples))

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(idx)
        fake = idx >= len(self.dataset)
        x = torch.empty(len(idx), *self.samples.shape[1:])
        y = torch.full((len(idx),), self.label, dtype=torch.int64)
        if (~fake).any():
            x[~fake], y[~fake] = self.dataset.batch(idx[~fake])
        x[fake] = self.samples[idx[fake] - len(self.dataset)]
        return x, y


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimizer's per-parameter state as flat named tensors ("<param>.<name>")."""
    return {f"{param}.{name}": torch.as_tensor(value)
            for param, state in optimizer.state_dict()["state"].items()
            for name, value in state.items()}


def load_optimizer_tensors(optimizer: torch.optim.Optimizer,
                           tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`optimizer_tensors` returned (hyper-parameters stay as configured)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        param, name = key.split(".", 1)
        state.setdefault(int(param), {})[name] = value
    optimizer.load_state_dict({"state": state,
                               "param_groups": optimizer.state_dict()["param_groups"]})
