"""The activation follower: from a layer's output to the activation function applied to it."""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

ACTIVATION_FUNCTIONS = frozenset(
    f"{name}{suffix}"
    for name in (
        "relu", "tanh", "sigmoid", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
        "softplus", "softsign", "hardtanh", "relu6", "hardswish", "hardsigmoid", "prelu",
        "rrelu", "logsigmoid", "tanhshrink",
    )
    for suffix in ("", "_")
)
"""Names of the torch functions (``torch.X``, ``F.X``, ``Tensor.X``, in place or not) that end
the path from a layer's output to its activation output."""

PASS_THROUGH_FUNCTIONS = frozenset({
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "dropout", "dropout_",
    "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d",
    "feature_dropout", "add", "add_", "__add__", "__iadd__",
})
"""Functions a layer's output may pass through on its way to its activation function:
normalisation, dropout (the identity in eval mode) and a residual connection's addition."""


class _FollowToActivation(TorchFunctionMode):
    """Follows layer outputs to their activation outputs during a forward pass.

    :meth:`layer_output` (called from a forward hook) stores a layer's output into ``into``
    and starts following it: a torch function whose first argument is the followed tensor moves
    the path on to its result when it is in :data:`PASS_THROUGH_FUNCTIONS`, and when it is in
    :data:`ACTIVATION_FUNCTIONS` its result is stored instead and the path ends. Any other use
    that returns a tensor leaves the layer's own output stored; calls that return none (the
    checks of ``input.dim()`` in BatchNorm) are ignored. Tensors are matched by identity, so
    this works inside ``vmap`` and on the graph of the outer-product path alike."""

    def __init__(self, into: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.into = into
        self._followed: dict[str, torch.Tensor] = {}  # layer -> the tensor its path is at

    def layer_output(self, name: str, out: torch.Tensor) -> None:
        self.into[name] = out
        self._followed[name] = out

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Calls that return no tensor (``dim()``, ``shape``, ...) only look at the tensor.
        if not self._followed or not args or not isinstance(out, torch.Tensor):
            return out
        name = getattr(func, "__name__", "")
        for layer, tensor in list(self._followed.items()):
            if args[0] is not tensor:
                continue
            if name in ACTIVATION_FUNCTIONS:
                self.into[layer] = out
                del self._followed[layer]
            elif name in PASS_THROUGH_FUNCTIONS:
                self._followed[layer] = out
            else:
                del self._followed[layer]
        return out
