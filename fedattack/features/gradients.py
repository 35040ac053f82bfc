"""Per-example gradient engines.

Two exact engines, chosen per selected layer (see :func:`outer_product_rule`):

- **outer products**: a layer whose type is in :data:`REGISTRY` has its per-example weight
  gradient formed from two factors that one batched forward and backward yield, the gradient at
  the layer's output and the layer's input (:class:`OuterGrad`); ``Linear`` and ungrouped,
  zero-padded ``Conv2d`` are registered here, and :func:`register_outer_product` adds a type.
- **torch.func**: any other layer (grouped or transposed convolutions, Conv1d, ...) gets
  ``vmap(grad)`` gradients (:class:`DenseGrad`); only those layers are differentiated there.

:func:`per_example_grads_loop` is the plain-autograd reference both are tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedattack.features.spec import LayerRef, resolve_layers

OUTER_PRODUCT = "outer-product"
TORCH_FUNC = "torch.func"
ENGINES = (OUTER_PRODUCT, TORCH_FUNC)

def _grad_columns(module: nn.Module, name: str) -> tuple[int, int]:
    """(rows, cols) of the gradient matrix of layer ``name``, the bias column included."""
    weight, bias = module.weight, getattr(module, "bias", None)
    rows, cols = weight.shape[0], weight[0].numel()
    if bias is None:
        return rows, cols
    if bias.shape != (rows,):
        raise ValueError(
            f"layer {name!r}: bias of shape {tuple(bias.shape)} does not match the "
            f"{rows} rows of its weight; its gradient cannot be laid out as a matrix"
        )
    return rows, cols + 1


def grad_matrix(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None) -> torch.Tensor:
    """Per-example (B, *weight.shape) and (B, rows) gradients -> (B, rows, cols [+1])."""
    matrix = weight_grad.flatten(2)
    if bias_grad is None:
        return matrix
    return torch.cat((matrix, bias_grad.unsqueeze(2)), dim=2)


def per_example_grads_loop(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: Sequence[LayerRef]
) -> dict[str, torch.Tensor]:
    """Reference implementation: plain autograd, one example at a time, the model in its current
    mode. Returns ``{layer name: (B, rows, cols [+1])}`` in the layout of the ``grad:`` features."""
    names = resolve_layers(model, layers)
    modules = dict(model.named_modules())
    params = {n: [p for p in (modules[n].weight, modules[n].bias) if p is not None] for n in names}
    flat = [p for n in names for p in params[n]]
    rows: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = iter(torch.autograd.grad(loss, flat))
        for n in names:
            g = [next(grads).unsqueeze(0) for _ in params[n]]
            rows[n].append(grad_matrix(g[0], g[1] if len(g) > 1 else None))
    return {n: torch.cat(rows[n]) for n in names}


@dataclass
class _DenseGrad:
    """One layer's per-example gradients as torch.func returns them."""

    weight: torch.Tensor  # (n, *weight.shape)
    bias: torch.Tensor | None  # (n, rows)

    def write(self, dst: torch.Tensor) -> None:
        """Into ``dst`` (n, rows, cols [+1]), in place: no concatenated temporary."""
        cols = dst.shape[-1] - (self.bias is not None)
        dst[..., :cols] = self.weight.flatten(2)
        if self.bias is not None:
            dst[..., cols] = self.bias

    def squared_norm(self) -> torch.Tensor:
        """(n,) squared L2 norm of each example's weight and bias gradients together."""
        return sum(g.flatten(1).square().sum(1) for g in (self.weight, self.bias) if g is not None)


@dataclass
class _OuterGrad:
    """One layer's per-example gradients kept as two factors whose product they are:
    ``backprop @ inputs`` is ``(n, rows, cols [+1])`` in the ``grad:`` layout."""

    backprop: torch.Tensor  # (n, rows, L): the loss's gradient at the layer output, L positions
    inputs: torch.Tensor  # (n, L, cols [+1]): the layer input at each position (+ a ones column)

    def write(self, dst: torch.Tensor) -> None:
        """Into ``dst`` (n, rows, cols [+1]): one ``bmm``, or at one position (a Linear layer)
        one broadcast multiply, which writes the same products 1.7-2x faster than a ``bmm``
        with an inner dimension of 1 on CPUs; no per-example temporary unless ``dst`` differs
        in dtype or device (float64 models, a CPU cache of a GPU extractor)."""
        product = torch.mul if self.backprop.shape[2] == 1 else torch.bmm
        if (dst.dtype, dst.device) == (self.inputs.dtype, self.inputs.device):
            product(self.backprop, self.inputs, out=dst)
        else:
            dst.copy_(product(self.backprop, self.inputs))

    def squared_norm(self) -> torch.Tensor:
        """(n,) squared Frobenius norm of each example's ``backprop @ inputs``; at one position
        (a Linear layer) the norms of the two factors multiply, no product formed."""
        if self.backprop.shape[2] == 1:
            return self.backprop.square().sum((1, 2)) * self.inputs.square().sum((1, 2))
        return torch.bmm(self.backprop, self.inputs).flatten(1).square().sum(1)



Factors = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class OuterProductRule:
    """How one layer type's per-example weight gradient is formed as an outer product.

    ``factors(module, inputs, backprop)`` turns one call's input and the loss's gradient at its
    output into ``(n, rows, L)`` and ``(n, L, cols)``, whose product summed over the ``L``
    positions is the weight gradient in the ``grad:`` layout (the bias column is appended by the
    extractor); ``applies(module)`` says whether this instance qualifies (a grouped convolution
    of a registered type may not)."""

    factors: Callable[[nn.Module, torch.Tensor, torch.Tensor], Factors]
    applies: Callable[[nn.Module], bool] = lambda _module: True


REGISTRY: dict[type[nn.Module], OuterProductRule] = {}
"""Layer type -> its outer-product rule. A selected layer whose type (or a base class of it) is
here, and whose rule applies, takes the outer-product engine; any other takes torch.func."""


def register_outer_product(
    layer_type: type[nn.Module], applies: Callable[[nn.Module], bool] = lambda _module: True
) -> Callable[[Callable[[nn.Module, torch.Tensor, torch.Tensor], Factors]], Callable]:
    """Decorator registering ``factors`` as the outer-product rule of ``layer_type``."""

    def register(factors):
        REGISTRY[layer_type] = OuterProductRule(factors, applies)
        return factors

    return register


def outer_product_rule(
    module: nn.Module, types: tuple[type[nn.Module], ...]
) -> OuterProductRule | None:
    """The rule of ``module`` if its type is registered (the nearest class of its MRO) and
    among ``types`` (the extractor's ``OUTER_PRODUCT_LAYERS``), and the rule applies; else None
    (the torch.func engine)."""
    if not isinstance(module, types):
        return None
    for cls in type(module).__mro__:
        rule = REGISTRY.get(cls)
        if rule is not None:
            return rule if rule.applies(module) else None
    return None


def engine_of(module: nn.Module, types: tuple[type[nn.Module], ...]) -> str:
    """:data:`OUTER_PRODUCT` or :data:`TORCH_FUNC`: the engine of one selected layer."""
    return TORCH_FUNC if outer_product_rule(module, types) is None else OUTER_PRODUCT


def _has_outer_product_grad(module: nn.Module, types: tuple[type[nn.Module], ...]) -> bool:
    """Whether the per-example gradient of ``module`` is a (sum of) outer product(s) of its
    output's gradient and its input that its registered rule can form."""
    return outer_product_rule(module, types) is not None


def _conv2d_applies(module: nn.Conv2d) -> bool:
    padding_ok = module.padding_mode == "zeros" and not isinstance(module.padding, str)
    return module.groups == 1 and padding_ok


@register_outer_product(nn.Conv2d, _conv2d_applies)
def conv2d_factors(module: nn.Conv2d, inputs: torch.Tensor, backprop: torch.Tensor) -> Factors:
    """A convolution sums over its output pixels, each with its unfolded input patch."""
    patches = F.unfold(inputs, module.kernel_size, module.dilation, module.padding, module.stride)
    return backprop.flatten(2), patches.transpose(1, 2)


@register_outer_product(nn.Linear)
def linear_factors(module: nn.Linear, inputs: torch.Tensor, backprop: torch.Tensor) -> Factors:
    """A Linear applied to ``(n, ..., in)`` sums over its middle axes."""
    n = len(inputs)
    return (
        backprop.reshape(n, -1, backprop.shape[-1]).transpose(1, 2),
        inputs.reshape(n, -1, inputs.shape[-1]),
    )


def _outer_factors(module: nn.Module, inputs: torch.Tensor, backprop: torch.Tensor) -> Factors:
    """(n, rows, L) gradient at the output and (n, L, cols) input of one call of a layer with a
    registered rule, L positions."""
    rule = outer_product_rule(module, tuple(REGISTRY))
    if rule is None:
        raise TypeError(f"no outer-product rule for {type(module).__name__}")
    return rule.factors(module, inputs, backprop)
