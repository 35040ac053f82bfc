"""The feature spec: which white-box features to compute, how layers are named, and the
prediction summaries (losses, confidences, entropies) computed from the logits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedattack.config import LayerRef
from fedattack.models import layer_names

OUTPUT_SCALES = ("probability", "logit")


@dataclass(frozen=True)
class FeatureSpec:
    """Which attack features to compute (Fig. 1 of Nasr et al.).

    ``gradients`` and ``activations`` name layers by module name or by (negative) index into
    ``layer_names(model)``; ``-1`` is the last layer.
    """

    gradients: tuple[LayerRef, ...] = (-1,)
    activations: tuple[LayerRef, ...] = ()
    output: bool = True
    loss: bool = True
    label: bool = True
    output_scale: str = "probability"
    """``output`` as the softmax probabilities (the paper's prediction vector), or as each
    class's logit-scaled probability ``log(p_j / (1 - p_j))`` (:func:`class_logits`): the same
    information, but a confidently correct prediction is not rounded to 1."""

    def __post_init__(self) -> None:
        if self.output_scale not in OUTPUT_SCALES:
            raise ValueError(f"unknown output_scale {self.output_scale!r}; known: {OUTPUT_SCALES}")
        for field in ("gradients", "activations"):
            refs = tuple(getattr(self, field))
            if any(isinstance(r, bool) or not isinstance(r, str | int) for r in refs):
                raise TypeError(f"FeatureSpec.{field} takes layer names or ints, got {refs!r}")
            object.__setattr__(self, field, refs)

    @classmethod
    def from_config(cls, features: Any) -> FeatureSpec:
        """The spec an experiment's ``attack.features`` block (config.FeatureConfig) asks for:
        its fields are this class's, by name."""
        return cls(**{f.name: getattr(features, f.name) for f in fields(cls)})

    @classmethod
    def all_activations(cls, model: nn.Module, output_scale: str = "probability") -> FeatureSpec:
        """The "white-box outputs" baseline: every layer's activation (plus output, loss and
        label), no gradients."""
        return cls(gradients=(), activations=tuple(layer_names(model)), output_scale=output_scale)

    @classmethod
    def black_box(cls, output_scale: str = "probability") -> FeatureSpec:
        """What a black-box attacker sees: the prediction vector and the true label."""
        return cls(gradients=(), activations=(), output=True, loss=False, label=True,
                   output_scale=output_scale)


def resolve_layers(model: nn.Module, refs: Sequence[LayerRef]) -> tuple[str, ...]:
    """Layer names for ``refs`` (names or indices into ``layer_names(model)``), in the order
    given, duplicates dropped. Raises ValueError naming the available layers."""
    names = layer_names(model)
    resolved: list[str] = []
    for ref in refs:
        if isinstance(ref, int):
            if not -len(names) <= ref < len(names):
                raise ValueError(
                    f"layer index {ref} out of range for {len(names)} layers; "
                    f"available: {', '.join(names)}"
                )
            name = names[ref]
        elif ref in names:
            name = ref
        else:
            raise ValueError(f"unknown layer {ref!r}; available: {', '.join(names)}")
        if name not in resolved:
            resolved.append(name)
    return tuple(resolved)




def class_logits(logits: torch.Tensor) -> torch.Tensor:
    """(n, C) float64 ``log(p_j / (1 - p_j))`` of every class j, from (n, C) logits, stably:
    ``z_j - logsumexp_{k != j} z_k`` (no probability is formed)."""
    logits = logits.double()
    n, c = logits.shape
    others = logits.unsqueeze(1).expand(n, c, c).clone()
    others.diagonal(dim1=1, dim2=2).fill_(-math.inf)
    return logits - others.logsumexp(-1)


def true_class_logit_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log(p_y / (1 - p_y))`` of the true class, in float64, computed stably from the logits:
    ``z_y - logsumexp_{j != y} z_j`` (no probability is formed, so it never saturates)."""
    logits = logits.double()
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -math.inf)
    return true - others.logsumexp(1)


def prediction_summaries(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-record float64 ``loss``, ``confidence``, ``logit_confidence`` and ``entropy`` from
    (n, C) logits, all from the log-softmax of the float64 logits. The loss is
    ``softplus(-logit_confidence)``, which equals ``-log p_y`` and stays positive (about
    ``exp(-margin)``) for a confidently correct record where ``-log_softmax`` in float32 rounds
    to exactly 0."""
    logits = logits.double()
    log_probs = logits.log_softmax(-1)
    logit_confidence = true_class_logit_confidence(logits, y)
    return {
        "loss": F.softplus(-logit_confidence, threshold=float("inf")),
        "confidence": torch.sigmoid(logit_confidence),
        "logit_confidence": logit_confidence,
        "entropy": -(log_probs.exp() * log_probs).sum(-1) / math.log(logits.shape[-1]),
    }


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Prediction uncertainty, eq. (5) of Nasr et al.: ``-sum_i p_i log p_i / log K`` over the
    last axis (the paper prints it without the minus sign); 1 for uniform, 0 for one-hot."""
    return -torch.special.xlogy(probs, probs).sum(-1) / math.log(probs.shape[-1])
