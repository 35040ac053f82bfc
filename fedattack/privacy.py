"""The defences of honest participants: DP-SGD through Opacus, and selective sharing.

DP-SGD (Abadi et al. 2016): every step samples a Poisson batch (each record with probability
batch_size / n), clips each example's gradient to `max_grad_norm` and adds Gaussian noise of
`noise_multiplier * max_grad_norm` to their sum. The privacy spent is accounted with Rényi DP
over every step a participant has taken in the whole run: the caller keeps the accountant's
history between rounds (a participant's Flower state) and hands it back each round.

Selective sharing (Shokri and Shmatikov 2015, the setting Hitaj et al. attacked): a participant
uploads only the `share_fraction` of parameters whose update is largest in magnitude; every other
parameter is returned as it was received, so it does not move the average.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedattack.config import PrivacyConfig
from fedattack.training import BatchDataset, train_on_batches

# One accountant step record: (noise multiplier, sample rate, number of steps), as Opacus keeps it.
HistoryEntry = tuple[float, float, int]


def check_private_model(model: nn.Module) -> None:
    """Raise a one-line ValueError if DP-SGD cannot train this model (e.g. BatchNorm layers,
    which mix examples of a batch, so per-example gradients are undefined)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        reason = str(errors[0]).split(". ")[0]
        raise ValueError(f"privacy: DP-SGD cannot train model {type(model).__name__}: {reason}")


@dataclass
class PrivateRound:
    """What one participant's DP-SGD training of one round leaves behind."""

    stats: dict[str, float]
    history: list[HistoryEntry]
    epsilon: float


def train_private(
    model: nn.Module,
    dataset: BatchDataset,
    indices: np.ndarray,
    optimizer: torch.optim.Optimizer,
    cfg: PrivacyConfig,
    batch_size: int,
    epochs: int,
    device: torch.device,
    generator: torch.Generator,
    history: list[HistoryEntry],
) -> PrivateRound:
    """`epochs` epochs of DP-SGD on `indices` (n / batch_size Poisson batches each); `model` is
    trained in place. `history` is the accountant's history from earlier rounds; `generator`
    draws both the batches and the noise."""
    from opacus import PrivacyEngine

    with warnings.catch_warnings():  # "secure RNG turned off": seeded runs are the point here
        warnings.simplefilter("ignore", UserWarning)
        engine = PrivacyEngine(accountant="rdp")
    engine.accountant.history = list(history)
    index_loader = DataLoader(TensorDataset(torch.as_tensor(indices, dtype=torch.int64)),
                              batch_size=min(batch_size, len(indices)), generator=generator)
    private, dp_optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=index_loader,
        noise_multiplier=cfg.noise_multiplier, max_grad_norm=cfg.max_grad_norm,
        poisson_sampling=True, noise_generator=generator,
    )
    stats: dict[str, float] = {}
    for _ in range(epochs):
        batches = (batch[0].numpy() for batch in loader)
        stats = train_on_batches(private, dataset, batches, dp_optimizer, device)
    private.remove_hooks()  # leaves `model` a plain module again
    return PrivateRound(stats, list(engine.accountant.history),
                        float(engine.accountant.get_epsilon(cfg.delta)))


def share_largest(received: list[np.ndarray], trained: list[np.ndarray],
                  fraction: float) -> list[np.ndarray]:
    """The upload under selective sharing: `received` plus the `fraction` of floating-point
    updates largest in magnitude (over all tensors together); other tensors (integer buffers)
    are uploaded as trained."""
    if fraction >= 1:
        return trained
    floats = [i for i, t in enumerate(trained) if t.dtype.kind == "f"]
    updates = {i: trained[i] - received[i] for i in floats}
    magnitudes = np.concatenate([np.abs(updates[i]).ravel() for i in floats])
    keep = max(1, int(round(fraction * magnitudes.size)))
    threshold = np.partition(magnitudes, magnitudes.size - keep)[magnitudes.size - keep]
    shared = list(trained)
    for i in floats:
        mask = np.abs(updates[i]) >= threshold
        shared[i] = np.where(mask, trained[i], received[i]).astype(trained[i].dtype)
    return shared


def client_level_epsilon(noise_multiplier: float, sample_rate: float, rounds: int,
                         delta: float) -> float:
    """Client-level DP's epsilon at `delta` after `rounds` rounds (Opacus' RDP accountant for the
    sampled Gaussian mechanism: each participant sampled with probability `sample_rate` per
    round, its clipped update's sensitivity covered by noise of `noise_multiplier` times the
    clip; fixed-size sampling is accounted as Poisson sampling at that rate, as is usual).
    Adaptive clipping spends the same budget (Flower splits `noise_multiplier` between the update
    and the clipped-count query, Andrew et al. 2021). Infinite without noise."""
    if noise_multiplier <= 0:
        return float("inf")
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(rounds))]
    return float(accountant.get_epsilon(delta))
