"""Labels from the last layer's update, before any image is reconstructed.

With softmax and cross-entropy, the gradient of the last layer's bias for one record is
``p - onehot(y)``: negative at the true label only (Zhao et al. 2020, iDLG). Local training moves
parameters against the gradient, so in the *update* (upload minus broadcast) the true label is
the only positive bias entry after one SGD step, and the largest after one Adam step (whose
update is about ``-lr * sign(gradient)``). Without a bias, a row of the weight update carries the
same sign when the layer's inputs are non-negative (after ReLU), so its row sum is used.

For a batch, the bias gradient averaged over the records is ``mean_i p_ic - n_c / n`` (n_c
records of class c), so that ``n_c = sum_i p_ic - n * g_c`` (Geng et al. 2021; Wainakh et al.
2022 build on the same fact). Over several SGD steps the update is ``-lr`` times the sum of the
steps' gradients, each step's gradient averaging its own batch: over one epoch of batches of b
records the gradients sum to ``(1 / b) * sum_i (p_ic - y_ic)``; SGD's momentum multiplies step
s's gradient by ``(1 - m^(T - s)) / (1 - m)``, replaced here by its mean over the steps. The
attacker does not know ``sum_i p_ic``; it estimates it from the model's mean softmax output on
random inputs, at the broadcast and at the uploaded weights, averaged (the two ends of the
local training; Geng et al.). Under secure aggregation the update is the average of several
participants' (equal shares make the same formula exact over their union). Counts are rounded
to integers summing to n by largest remainders.

Adam's update does not scale with the gradient, so for an Adam recipe only the sign is read:
the classes whose bias moved up are present, and the n records are spread over them evenly
(``label_method: "sign"``); the result row says which method produced the labels.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedattack.inversion.core import InversionTarget

PROBES = 256  # random inputs the mean softmax output is estimated from


def last_linear(model: nn.Module) -> tuple[str, str | None]:
    """The parameter names (weight, bias or None) of the model's last nn.Linear."""
    linears = [(name, module) for name, module in model.named_modules()
               if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("label recovery needs a model whose last layer is nn.Linear")
    name, module = linears[-1]
    prefix = f"{name}." if name else ""
    return f"{prefix}weight", (f"{prefix}bias" if module.bias is not None else None)


def class_update(model: nn.Module, broadcast, upload) -> torch.Tensor:
    """(K,) float64: the last layer's bias update, or its weight update summed over each row."""
    weight, bias = last_linear(model)
    name = bias or weight
    delta = (torch.as_tensor(upload[name]).double() - torch.as_tensor(broadcast[name]).double())
    return delta if bias else delta.sum(dim=1)


def idlg_label(update: torch.Tensor) -> int:
    """iDLG's label of a single record from the last layer's update (see the module docstring)."""
    return int(torch.argmax(update))


def round_counts(estimate: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to `total`, nearest to `estimate` by largest remainders."""
    estimate = np.clip(np.nan_to_num(np.asarray(estimate, dtype=np.float64)), 0, None)
    if estimate.sum() <= 0:
        estimate = np.ones_like(estimate)
    scaled = estimate * total / estimate.sum()
    counts = np.floor(scaled).astype(np.int64)
    order = np.argsort(-(scaled - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def labels_of_counts(counts: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(np.arange(len(counts)), counts)).long()


@torch.no_grad()
def mean_softmax(target: InversionTarget, generator: torch.Generator) -> np.ndarray:
    """The model's mean softmax output on random inputs, at the broadcast and the uploaded
    weights, averaged."""
    probes = torch.randn((PROBES, *target.input_shape), generator=generator)
    means = []
    for state in (target.broadcast, target.upload):
        model = _with_weights(target.model, state)
        means.append(torch.softmax(model(probes).double(), dim=1).mean(0))
    return torch.stack(means).mean(0).numpy()


def _with_weights(model: nn.Module, state) -> nn.Module:
    copied = copy.deepcopy(model).eval()
    copied.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return copied


def count_labels(target: InversionTarget, generator: torch.Generator) -> np.ndarray:
    """Estimated records per class in the victim's batch (SGD recipes; see the docstring)."""
    recipe = target.recipe
    gradient_sum = -class_update(target.model, target.broadcast, target.upload).numpy() / recipe.lr
    m, steps = recipe.momentum, recipe.steps
    scale = 1.0 if not m else float(np.mean([(1 - m ** (steps - s)) / (1 - m)
                                             for s in range(steps)]))
    share = float(np.mean(target.groups))  # one participant's records (equal shares: exact)
    batch = min(recipe.batch_size, share)
    mean_gradient = gradient_sum * batch / (recipe.epochs * scale * share)
    estimate = target.num_records * (mean_softmax(target, generator) - mean_gradient)
    return round_counts(estimate, target.num_records)


def sign_counts(target: InversionTarget) -> np.ndarray:
    """The n records spread over the classes whose last-layer update is positive (the largest
    alone when none is)."""
    update = class_update(target.model, target.broadcast, target.upload).numpy()
    present = update > 0
    if not present.any():
        present[np.argmax(update)] = True
    return round_counts(present.astype(np.float64), target.num_records)


def one_hot_labels(target: InversionTarget, generator: torch.Generator,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The recovered labels, as (n,) class indices on the CPU and (n, K) one-hot rows on
    `device`, and the method that gave them."""
    labels, method = recover_labels(target, generator)
    return labels, F.one_hot(labels, target.num_classes).float().to(device), method


def recover_labels(target: InversionTarget, generator: torch.Generator) -> tuple[torch.Tensor, str]:
    """The labels of the victim's records, sorted by class, and the method that gave them."""
    if target.num_records == 1:
        update = class_update(target.model, target.broadcast, target.upload)
        return torch.tensor([idlg_label(update)]), "idlg"
    if target.recipe.optimizer == "sgd":
        return labels_of_counts(count_labels(target, generator)), "count"
    return labels_of_counts(sign_counts(target)), "sign"
