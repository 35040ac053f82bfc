"""What the federated attacks that need no reference training read, and the signals they take.

The aggregator's view (``"global"``) holds, for each recorded round t, every participant's upload
``upload-r<t>-p<j>``, the model it broadcast at the round's start (``global-r<t-1>``) and the
aggregate (``global-r<t>``). A participant's update of round t is ``global_{t-1} - upload_t^j``
(the direction its local training moved the model, up to sign: plain SGD gives the learning rate
times the sum of its gradients); an isolated victim's is ``sent_t - upload_t``, from the model the
aggregator sent it alone. :func:`federated_rounds` loads, for the rounds an attack observes
(``attack.snapshots``), the victim's uploads, the other participants' uploads and the broadcast
models, and nothing else.

Signals (float64, one per model and record): :func:`per_record_losses` (cross-entropy) and
:func:`gradient_alignment` (the per-record gradient at a model, dotted with given update vectors,
and the norms both need for cosine and difference). Only the observed models and the target
records' inputs and labels are read; never the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# torch is imported where used: the attacks import `scored` from here when registered.
if TYPE_CHECKING:
    import torch
    from torch import nn

GRAD_CHUNK_BYTES = 256 * 2**20  # per-record gradients held at once, at most


@dataclass
class FederatedRounds:
    """The global attacker's observation of one victim over the observed rounds."""

    rounds: list[int]
    victim: int  # the victim's partition id
    others: list[int]  # the other participants' partition ids (the reference models)
    broadcast: list[nn.Module]  # global_{t-1}, the model the participants trained from
    victim_start: list[nn.Module]  # what the victim trained from: global_{t-1}, or under
    # isolation the model the aggregator sent it (``sent_t`` of its partition)
    victim_uploads: list[nn.Module]  # upload_t of the victim
    other_uploads: list[list[nn.Module]]  # [round][other] upload_t of the others


def federated_rounds(ctx, with_others: bool = True) -> FederatedRounds:
    """Uploads and broadcast models of the observed rounds, from the aggregator's view (which the
    input grants a global attacker only); without the other participants' uploads (`others` and
    `other_uploads` empty) unless `with_others`."""
    inp = ctx.input
    view = inp.aggregator_view()
    victim = inp.partition
    others = [p for p in view.participants if p != victim and with_others]
    rounds = list(inp.observation.rounds)
    broadcast, start, mine, theirs = [], [], [], []
    for t in rounds:
        broadcast.append(view.broadcast(t))
        sent = view.sent(t, victim)  # isolation: the model sent to the victim alone
        start.append(broadcast[-1] if sent is None else sent)
        mine.append(view.upload(t, victim))
        theirs.append([view.upload(t, p) for p in others])
    if with_others and not others:
        raise ValueError("needs at least one participant besides the victim")
    return FederatedRounds(rounds, victim, others, broadcast, start, mine, theirs)


def flat_parameters(model: nn.Module) -> torch.Tensor:
    import torch

    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def update(before: nn.Module, after: nn.Module) -> torch.Tensor:
    """``before - after`` over the trainable parameters, flattened (float64)."""
    return flat_parameters(before) - flat_parameters(after)


def per_record_losses(models: list[nn.Module], dataset, indices: np.ndarray, device,
                      batch: int = 512) -> np.ndarray:
    """(M, N) cross-entropy of each model on each record, float64."""
    import torch
    import torch.nn.functional as F

    out = np.empty((len(models), len(indices)), np.float64)
    with torch.no_grad():
        for m, model in enumerate(models):
            model = model.to(device).eval()
            for start in range(0, len(indices), batch):
                x, y = dataset.batch(indices[start:start + batch])
                logits = model(x.to(device)).double()
                out[m, start:start + batch] = F.cross_entropy(
                    logits, y.to(device), reduction="none").cpu().numpy()
    return out


def gradient_alignment(model: nn.Module, dataset, indices: np.ndarray, updates: torch.Tensor,
                       device) -> tuple[np.ndarray, np.ndarray]:
    """Per-record loss gradients g_i at `model`: their dot products with each row of `updates`
    (K, P) as a (K, N) array, and their squared norms (N,), float64."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    model = model.to(device).eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    size = sum(v.numel() for v in params.values())
    u = torch.as_tensor(updates, dtype=torch.float64).to(device)
    if u.ndim != 2 or u.shape[1] != size:
        raise ValueError(f"updates must be (K, {size}), got {tuple(u.shape)}")

    def loss(p, x, y):
        logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits, y.unsqueeze(0))

    per_record = vmap(grad(loss), in_dims=(None, 0, 0))
    chunk = max(1, min(512, GRAD_CHUNK_BYTES // (8 * size)))
    dots = np.empty((u.shape[0], len(indices)), np.float64)
    norms = np.empty(len(indices), np.float64)
    for start in range(0, len(indices), chunk):
        x, y = dataset.batch(indices[start:start + chunk])
        g = per_record(params, x.to(device), y.to(device))
        flat = torch.cat([g[k].reshape(len(y), -1) for k in params], dim=1).double()
        dots[:, start:start + len(y)] = (u @ flat.T).cpu().numpy()
        norms[start:start + len(y)] = (flat * flat).sum(dim=1).cpu().numpy()
    return dots, norms


def scored(name: str, features: str, scores: np.ndarray, extra: dict):
    """The outcome of an attack without a fitted threshold: its hard decisions cut at the median
    target score (the evaluation is balanced by design, so half the targets are called members;
    no label is read)."""
    from fedattack.attack_registry import AttackOutcome

    return AttackOutcome(name, features, scores, threshold=float(np.median(scores)), extra=extra)
