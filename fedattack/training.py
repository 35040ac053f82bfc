"""Training and evaluation loops shared by stand-alone training, fine-tuning and FL clients.

Everything is seeded by the caller: `train_epoch` shuffles with the `torch.Generator` it is
given, `train_model` derives one generator per epoch from (seed, epoch), and model
initialisation follows torch's global RNG (seed it before `build_model`). On CPU the same
seeds give bit-identical weights.

Weights travel as `get_weights`/`set_weights` lists of numpy arrays in `state_dict` order,
BatchNorm buffers included, which is what Flower's NumPyClient exchanges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedattack.config import TrainConfig


@runtime_checkable
class BatchDataset(Protocol):
    """Anything that returns the examples at some indices as (x float32, y int64) tensors."""

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


def resolve_device(pref: str = "auto") -> torch.device:
    """`auto`: cuda when available, else cpu; `cpu`, `cuda` or `cuda:N` as asked."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(pref)
    except RuntimeError:
        raise ValueError(f"unknown device {pref!r}; accepted: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {pref!r}; accepted: auto, cpu, cuda, cuda:N")
    return device


def set_torch_threads(n: int) -> None:
    """Intra-op threads for this process (give each simulated client its share of the cores)."""
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    torch.set_num_threads(n)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or SGD (with cfg.momentum) at cfg.lr; weight_decay is the L2 penalty of both."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; accepted: adam, sgd")


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Stepped schedule: lr * gamma ** (number of milestones <= epoch), epochs counted from 0.

    With the paper's CIFAR set-up (lr 0.01, milestones [50, 100], gamma 0.1), epochs 0-49 use
    0.01, 50-99 use 0.001 and 100 on use 0.0001.
    """
    if epoch < 0:
        raise ValueError(f"epoch counts from 0, got {epoch}")
    passed = sum(1 for m in cfg.lr_milestones if m <= epoch)
    return cfg.lr * cfg.lr_gamma**passed


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _as_indices(indices: np.ndarray, what: str) -> np.ndarray:
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{what}: no indices given")
    return idx


def train_epoch(
    model: nn.Module,
    dataset: BatchDataset,
    indices: np.ndarray,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    proximal: tuple[float, list[torch.Tensor]] | None = None,
) -> dict[str, float]:
    """One pass over `indices` in an order drawn from `generator` (a CPU generator).

    Mini-batches of `batch_size` (the last one may be smaller), cross-entropy loss, plus
    FedProx's ``mu / 2 * ||w - anchor||^2`` where ``proximal = (mu, anchor)``. Returns the mean
    training (cross-entropy) loss and accuracy over the epoch, as measured during it.
    """
    idx = _as_indices(indices, "train_epoch")
    order = idx[torch.randperm(idx.size, generator=generator).numpy()]
    batches = (order[start : start + batch_size] for start in range(0, order.size, batch_size))
    return train_on_batches(model, dataset, batches, optimizer, device, proximal)


def train_on_batches(
    model: nn.Module,
    dataset: BatchDataset,
    batches: Iterable[np.ndarray],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    proximal: tuple[float, list[torch.Tensor]] | None = None,
) -> dict[str, float]:
    """One optimizer step per batch of indices, cross-entropy loss (plus the proximal term, see
    `train_epoch`); the mean cross-entropy loss and accuracy over the examples seen, as measured
    during the pass."""
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for batch in batches:
        x, y = dataset.batch(np.asarray(batch))
        x, y = x.to(device), y.to(device)
        seen += y.shape[0]
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        if proximal is not None:  # the gradient of mu / 2 * ||w - anchor||^2
            mu, anchor = proximal
            with torch.no_grad():
                for p, a in zip(model.parameters(), anchor, strict=True):
                    if p.grad is not None:
                        p.grad.add_(p - a, alpha=mu)
        optimizer.step()
        total_loss += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
    seen = max(seen, 1)
    return {"loss": total_loss.item() / seen, "accuracy": correct.item() / seen}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: BatchDataset,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean cross-entropy loss and accuracy in eval mode; every module's mode is restored."""
    idx = _as_indices(indices, "evaluate")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, idx.size, batch_size):
            x, y = dataset.batch(idx[start : start + batch_size])
            x, y = x.to(device), y.to(device)
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    finally:
        for m, training in modes:
            m.training = training
    return {"loss": total_loss.item() / idx.size, "accuracy": correct.item() / idx.size}


def global_model_entry(model: nn.Module, weights, dataset: BatchDataset, splits,
                       device: torch.device, server_round: int, started: float) -> dict:
    """The run.json history entry of the global model `weights` after `server_round`: loss and
    accuracy on the participants' records (train) and on the held-out non-members (test), and
    the seconds since `started` (a perf_counter reading). Written by the legacy and the Message
    API aggregators alike."""
    set_weights(model, weights)
    model.to(device)
    train = evaluate(model, dataset, splits.members(), device)
    test = evaluate(model, dataset, splits.nonmembers, device)
    return {"round": server_round, "train_loss": train["loss"],
            "train_accuracy": train["accuracy"], "test_loss": test["loss"],
            "test_accuracy": test["accuracy"],
            "elapsed_s": round(time.perf_counter() - started, 3)}


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling generator of one epoch, so that a resumed run shuffles as an unbroken one."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def train_model(
    model: nn.Module,
    dataset: BatchDataset,
    train_idx: np.ndarray,
    test_idx: np.ndarray | None,
    cfg: TrainConfig,
    epochs: int,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[dict], None] | None = None,
    start_epoch: int = 0,
) -> list[dict]:
    """Centralised training for `epochs` epochs, numbered from `start_epoch`.

    The learning rate of epoch e is `lr_at(cfg, e)` and its shuffle comes from
    `epoch_generator(seed, e)`. A fresh optimizer is made on each call, so resuming a run with
    `start_epoch` restarts Adam's moments and SGD's momentum. Each record is
    {"epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}; the test
    fields are None when `test_idx` is None or empty. `on_epoch(record)` is called after each.
    """
    if epochs < 0 or start_epoch < 0:
        raise ValueError(f"epochs and start_epoch must be >= 0, got {epochs}, {start_epoch}")
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    has_test = test_idx is not None and np.asarray(test_idx).size > 0
    history = []
    for epoch in range(start_epoch, start_epoch + epochs):
        lr = lr_at(cfg, epoch)
        set_lr(optimizer, lr)
        train = train_epoch(
            model,
            dataset,
            train_idx,
            optimizer,
            cfg.batch_size,
            device,
            epoch_generator(seed, epoch),
        )
        test = evaluate(model, dataset, test_idx, device) if has_test else {}
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "test_loss": test.get("loss"),
            "test_accuracy": test.get("accuracy"),
        }
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return history


def weight_names(model: nn.Module) -> list[str]:
    return list(model.state_dict().keys())


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """Copies of the state_dict values (parameters and buffers) as numpy arrays, in order."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: list[np.ndarray]) -> None:
    """Load `weights` (in `weight_names` order) into `model`, cast to each entry's dtype.

    Strict: a count or shape mismatch raises ValueError naming the offending key, and leaves
    the model unchanged.
    """
    state = model.state_dict()
    keys = list(state)
    if len(weights) != len(keys):
        where = (
            f"first missing key {keys[len(weights)]!r}"
            if len(weights) < len(keys)
            else f"{len(weights) - len(keys)} extra array(s) after the last key {keys[-1]!r}"
        )
        raise ValueError(f"expected {len(keys)} arrays, got {len(weights)}: {where}")
    new_state = {}
    for key, w in zip(keys, weights, strict=True):
        arr = np.asarray(w)
        if tuple(arr.shape) != tuple(state[key].shape):
            raise ValueError(
                f"shape mismatch for {key!r}: model has {tuple(state[key].shape)}, "
                f"got {tuple(arr.shape)}"
            )
        new_state[key] = torch.from_numpy(np.array(arr, copy=True)).to(state[key].dtype)
    model.load_state_dict(new_state, strict=True)
