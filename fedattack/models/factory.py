"""The user's own target model: ``model: {factory: "package.module:callable", kwargs: {...}}``.

The factory (a class or a function) is called with ``kwargs``, plus ``input_shape`` and
``num_classes`` from the dataset where its signature names them (or takes ``**kwargs``), and must
return an ``nn.Module`` mapping a batch of records (B, *input_shape) to logits (B, num_classes).
:func:`check_on_batch` proves that on one batch before anything trains. A model trained
elsewhere is loaded with :func:`load_weights` (safetensors, or a torch state dict read with
``weights_only``: never pickle).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedattack.usercode import UserCodeError, call, import_object, one_line

FIELD = "model.factory"
SAFETENSORS = ".safetensors"


def _takes(function: Any, name: str) -> bool:
    """Whether `function` accepts keyword argument `name`."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: pass nothing extra
        return False
    return any(p.name == name and p.kind != p.POSITIONAL_ONLY or p.kind == p.VAR_KEYWORD
               for p in parameters)


def build_factory_model(ref: str, kwargs: dict[str, Any], input_shape: tuple[int, ...],
                        num_classes: int) -> nn.Module:
    """A fresh model from the factory `ref` (seed torch's RNG first for a reproducible one)."""
    factory = import_object(ref, FIELD)
    given = dict(kwargs)
    dataset_args = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    given.update({k: v for k, v in dataset_args.items() if _takes(factory, k)})
    model = call(factory, ref, FIELD, **given)
    if not isinstance(model, nn.Module):
        raise UserCodeError(f"{FIELD}: {ref} returned a {type(model).__name__}, not a "
                            "torch.nn.Module")
    return model


def check_on_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                   field: str = FIELD) -> None:
    """One forward and backward pass on a batch of the dataset: logits of shape (B, num_classes),
    finite, and a gradient for every trainable parameter; UserCodeError naming `field`."""
    try:
        logits = model(x)
    except Exception as err:
        raise UserCodeError(f"{field}: the model fails on a batch of the dataset of shape "
                            f"{tuple(x.shape)} ({one_line(err)})") from None
    if not isinstance(logits, torch.Tensor) or logits.shape != (len(x), num_classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserCodeError(f"{field}: the model maps a batch of shape {tuple(x.shape)} to "
                            f"{got}; expected logits of shape ({len(x)}, {num_classes})")
    if not torch.isfinite(logits).all():
        raise UserCodeError(f"{field}: the model's logits on a batch of the dataset are not "
                            "finite")
    try:
        F.cross_entropy(logits, y).backward()
    except Exception as err:
        raise UserCodeError(f"{field}: the backward pass fails ({one_line(err)})") from None
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise UserCodeError(f"{field}: the model has no trainable parameter")
    missing = [n for n, p in trainable if p.grad is None]
    if len(missing) == len(trainable):
        raise UserCodeError(f"{field}: the loss does not depend on any parameter of the model")
    model.zero_grad(set_to_none=True)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file, or of a torch state dict read with weights_only (no
    pickled code runs); UserCodeError naming model.weights otherwise."""
    path = Path(path)
    try:
        if path.suffix == SAFETENSORS:
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserCodeError(f"model.weights: {path} not found") from None
    except Exception as err:
        raise UserCodeError(f"model.weights: {path} is not a safetensors file or a torch "
                            f"state dict readable without pickle ({one_line(err)})") from None
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserCodeError(f"model.weights: {path} holds a {type(state).__name__}, not a state "
                            "dict of named tensors (save model.state_dict())")
    return state


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """`model` with the weights of `path`, every tensor named and shaped as the model's."""
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        problems = [f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                    for what, names in (("missing", missing), ("unexpected", unexpected),
                                        ("of another shape", wrong)) if names]
        raise UserCodeError(f"model.weights: {path} does not fit the model of model.factory "
                            f"({'; '.join(problems)})")
    if not all(math.isfinite(float(v.float().abs().sum())) for v in state.values()):
        raise UserCodeError(f"model.weights: {path} holds non-finite values")
    model.load_state_dict(state, strict=True)
    return model
