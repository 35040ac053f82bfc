"""White-box attack features of target records over T model snapshots (Nasr et al., Fig. 1).

For each target record ``(x, y)`` and each observed snapshot ``W^{t}`` (t = 1..T, in time
order) the attacker computes, in one forward and one backward pass per snapshot:

- ``grad:<layer>``: the per-example gradient of the loss w.r.t. the layer's parameters, laid out
  as a matrix of ``rows = weight.shape[0]`` (out_features; conv: out_channels) by
  ``cols = weight[0].numel()`` (in_features; conv: in_channels * kh * kw), with the bias gradient,
  where the layer has a bias, concatenated as one extra last column. Row ``j`` then holds
  everything that feeds output unit (or channel) ``j``, which is what the attack's convolution
  over "the input size of the fully connected layer" reads (Section II-A). Per record:
  ``(T, rows, cols [+1])``.
- ``act:<layer>``: the output of the layer's activation function, flattened: ``(T, d)``. Nasr et
  al. attack "the outputs of individual activation layers" (Table III, Section II-A), so the
  layer's output is followed through the calls that take it as their first argument, through
  normalisation, dropout and a residual addition, to the first activation function (Tanh, ReLU,
  ..., as a module or as ``F.relu``): for the fully connected models ``tanh(W h + b)``; for a
  ResNet block's second convolution ``relu(bn(conv(x)) + shortcut)``. A layer no activation
  follows (the output layer: its logits; the prediction vector is ``output``) gives its own
  output. See :class:`_FollowToActivation`.
- ``output``: softmax probabilities ``(T, C)``; ``loss``: per-example cross-entropy ``(T, 1)``
  (computed in float64 from the logits, so a confidently correct record's loss is a small
  positive number, not the 0 of a float32 log-softmax, before it is stored as float32);
  ``label``: the one-hot true label ``(C,)`` (the same for every snapshot).

Layers are addressed by name or by index into :func:`fedattack.models.layer_names` (the
Linear and convolution modules in forward order; ``-1`` is the last layer).

Per-example gradients take one of two exact paths, chosen per extractor from the selected layers:

- **Outer products** when every gradient layer is an ``nn.Linear`` or an ``nn.Conv2d`` with
  ``groups=1`` and numeric zero padding (:attr:`FeatureExtractor.OUTER_PRODUCT_LAYERS`): one
  batched ``functional_call`` whose forward hooks keep each selected layer's input and make its
  output a leaf of the graph, one batched backward of the *sum* of the per-example losses to those
  outputs, then one ``bmm`` per layer written straight into the feature tensor. In eval mode the
  examples of a batch do not interact (BatchNorm uses running statistics, Dropout is off), so the
  gradient of the summed loss w.r.t. example ``i``'s layer output is example ``i``'s own; the
  layer's weight gradient is that signal times the layer input (for a convolution, its unfolded
  patches), summed over positions and calls, and a column of ones appended to the input yields
  the bias gradient as the last column. No parameter gradient and no per-example intermediate is
  ever formed, so this costs little more than one batched forward plus writing the features.
- **torch.func** for every other layer type (grouped or transposed convolutions, ...):
  ``vmap(grad_and_value(loss_of_one_example))`` over a ``functional_call`` of the model in which
  only the selected layers' parameters are the differentiated argument and every other parameter
  and buffer is a constant, so the backward pass stops at the earliest selected layer. It knows
  nothing of the layer's algebra, which is why it stays the general path; on Linear layers it
  materialises each example's gradients in a chunk and copies them (about twice as slow as the
  outer products on ``benchmarks/per_example_grads.py``).

Both use the models in eval mode (BatchNorm on running stats). Activations are captured by forward
hooks during the same call and the output and loss come out of it, so each snapshot costs one
pass per chunk.

Nothing here holds the features of all records at once: :meth:`FeatureExtractor.batches` streams
them, :meth:`FeatureExtractor.cache` streams them into ``.npy`` files that :class:`FeatureCache`
reads back by rows, and :meth:`FeatureExtractor.scalar_summaries` reduces them to a few numbers
per record and snapshot.
Records are processed in chunks sized by ``memory_mb`` from the feature sizes and from the
working memory of one record's pass, which the extractor measures once on a zero record (so
DenseNet's large saved activations shrink its chunks). Measured peaks of a chunk stay within
about twice ``memory_mb`` (allocator overheads); a batch that ``batches`` yields comes on top,
sized by its ``batch_size``.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from fedattack.io import CorruptedFile, read_json, verify_checksums, write_checksums, write_json
from fedattack.models import layer_names

LayerRef = str | int
CACHE_INDEX = "index.json"
CACHE_VERSION = 3  # 2: act:<layer> is the activation function's output, no longer the layer's;
# 3: the spec carries output_scale, the loss is computed in float64
_BYTES = 4  # every feature is float32
_HUGE_PAGE = 2 * 2**20


class Dataset(Protocol):
    num_classes: int
    input_shape: tuple[int, ...]

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


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


OUTPUT_SCALES = ("probability", "logit")


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


@dataclass
class _Pass:
    """What one snapshot yields for one chunk of records."""

    logits: torch.Tensor  # (n, C)
    loss: torch.Tensor  # (n,) float64, never rounded to 0 (see prediction_summaries)
    grads: dict[str, _DenseGrad | _OuterGrad]  # layer -> its per-example gradients
    acts: dict[str, torch.Tensor]  # layer -> (n, d)


def _has_outer_product_grad(module: nn.Module, types: tuple[type[nn.Module], ...]) -> bool:
    """Whether the per-example gradient of ``module`` is a (sum of) outer product(s) of its
    output's gradient and its input that :func:`_outer_factors` can form."""
    if not isinstance(module, types):
        return False
    if isinstance(module, nn.Conv2d):
        padding_ok = module.padding_mode == "zeros" and not isinstance(module.padding, str)
        return module.groups == 1 and padding_ok
    return isinstance(module, nn.Linear)


def _outer_factors(
    module: nn.Module, inputs: torch.Tensor, backprop: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, rows, L) gradient at the output and (n, L, cols) input of one call of a Linear or
    Conv2d layer, L positions (a Linear applied to (n, ..., in) sums over its middle axes; a
    convolution over its output pixels, each with its unfolded input patch)."""
    n = len(inputs)
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(
            inputs, module.kernel_size, module.dilation, module.padding, module.stride
        )
        return backprop.flatten(2), patches.transpose(1, 2)
    return (
        backprop.reshape(n, -1, backprop.shape[-1]).transpose(1, 2),
        inputs.reshape(n, -1, inputs.shape[-1]),
    )


class FeatureExtractor:
    """Computes the attack features of target records over T snapshots of one architecture.

    ``models`` are the T snapshots in time order; they are put in eval mode and are not
    otherwise changed. Their parameters and buffers are taken at construction, detached onto
    ``device`` (on the same device they share memory with the models: do not train the models
    while the extractor is in use). The first model's module runs every snapshot's tensors
    through ``functional_call``. ``memory_mb`` bounds one chunk of records; see
    :meth:`chunk_size`. ``input_shape`` defaults to the models' ``input_shape`` attribute (every
    model of ``fedattack.models`` has one); it sizes the activation features and the working
    memory estimate. ``outer_product`` says which path computes the per-example gradients (module
    docstring).
    """

    CHUNK_GRAD_MB = 16.0
    """Cap on one snapshot's raw per-example gradients in a chunk of the torch.func path (see
    :meth:`chunk_size`)."""

    OUTER_CHUNK_GRAD_MB = 64.0
    """The same cap for the outer-product path, measured on ``benchmarks/per_example_grads.py``
    (350-record chunks there; 90 were 30% slower, 1,400 no faster and noisier in peak memory)."""

    OUTER_PRODUCT_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
    """Layer types whose per-example gradients are formed as outer products (module docstring);
    when a selected gradient layer is of another type, or ``groups > 1`` or padding by a mode or
    a string, all of them take the torch.func path. Empty: torch.func for every layer."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        spec: FeatureSpec,
        num_classes: int,
        device: str | torch.device = "cpu",
        memory_mb: float = 256.0,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        if not models:
            raise ValueError("FeatureExtractor needs at least one model snapshot")
        if memory_mb <= 0:
            raise ValueError(f"memory_mb must be positive, got {memory_mb}")
        self.spec = spec
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.memory_mb = float(memory_mb)
        self.module = models[0]
        for m in models:
            m.eval()
        self.grad_layers = resolve_layers(self.module, spec.gradients)
        self.act_layers = resolve_layers(self.module, spec.activations)
        self._modules = dict(self.module.named_modules())
        self._snapshots = [self._tensors(m) for m in models]
        self._check_same_architecture(models)
        self._diff_names = {
            n: [f"{n}.{p}" for p in ("weight", "bias") if getattr(self._modules[n], p) is not None]
            for n in self.grad_layers
        }
        self.outer_product = all(
            _has_outer_product_grad(self._modules[n], self.OUTER_PRODUCT_LAYERS)
            for n in self.grad_layers
        )
        self.input_shape = tuple(input_shape or getattr(self.module, "input_shape", ()))
        self._shapes = self._component_shapes()
        if not self._shapes:
            raise ValueError(f"the feature spec selects nothing: {spec}")
        self._grad_bytes = _BYTES * sum(
            math.prod(s[1:]) for k, s in self._shapes.items() if k.startswith("grad:")
        )
        self._working_bytes = self._probe_working_bytes()

    # ----- set-up

    def _tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        state = dict(model.named_parameters())
        state.update(model.named_buffers())
        return {k: v.detach().to(self.device) for k, v in state.items()}

    def _check_same_architecture(self, models: Sequence[nn.Module]) -> None:
        ref = {k: v.shape for k, v in self._snapshots[0].items()}
        for t, snap in enumerate(self._snapshots[1:], start=1):
            if {k: v.shape for k, v in snap.items()} != ref:
                raise ValueError(
                    f"snapshot {t} ({type(models[t]).__name__}) differs in "
                    "parameter names or shapes from snapshot 0"
                )

    def _component_shapes(self) -> dict[str, tuple[int, ...]]:
        T, C = len(self._snapshots), self.num_classes
        shapes: dict[str, tuple[int, ...]] = {}
        for n in self.grad_layers:
            shapes[f"grad:{n}"] = (T, *_grad_columns(self._modules[n], n))
        if self.act_layers:
            if not self.input_shape:
                raise ValueError(
                    "activation features need input_shape (the model has no "
                    "input_shape attribute; pass input_shape=...)"
                )
            probe = self._snapshot_pass(
                0,
                self._zero_record(),
                torch.zeros(1, dtype=torch.long, device=self.device),
                (),
                self.act_layers,
            )
            for n in self.act_layers:
                shapes[f"act:{n}"] = (T, probe.acts[n].shape[1])
        if self.spec.output:
            shapes["output"] = (T, C)
        if self.spec.loss:
            shapes["loss"] = (T, 1)
        if self.spec.label:
            shapes["label"] = (C,)
        return shapes

    # ----- public

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-record shape of each component (see the module docstring)."""
        return dict(self._shapes)

    def record_bytes(self) -> int:
        """Bytes of all features of one record, over all T snapshots."""
        return _BYTES * sum(math.prod(s) for s in self._shapes.values())

    def working_bytes(self) -> int:
        """Per-record working memory of one snapshot's pass: the peak of the tensors alive at
        once during the forward and backward pass of one record, measured at construction (0
        without an input shape)."""
        return self._working_bytes

    def chunk_size(self) -> int:
        """Records per chunk: as many as fit in ``memory_mb`` with their features over all T
        snapshots (per-example gradients dominate) and their :meth:`working_bytes`, but at most
        ``CHUNK_GRAD_MB`` of one snapshot's raw gradients (``OUTER_CHUNK_GRAD_MB`` on the
        outer-product path), beyond which bigger chunks vectorise no better while their freshly
        allocated buffers cost page faults and leave the cache. The outer-product path allocates
        no per-example gradients, only the activations of a batched forward, so its cap is
        higher. At least 1."""
        fit = int(self.memory_mb * 2**20) // (self.record_bytes() + self.working_bytes())
        if self._grad_bytes:
            cap_mb = self.OUTER_CHUNK_GRAD_MB if self.outer_product else self.CHUNK_GRAD_MB
            fit = min(fit, int(cap_mb * 2**20) // self._grad_bytes)
        return max(1, fit)

    def batches(
        self, dataset: Dataset, indices: np.ndarray, batch_size: int = 256
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Features of ``dataset`` records ``indices``, in that order, ``batch_size`` records at
        a time: ``{component: (B, *shape) float32}`` on the extractor's device. Each batch is
        computed in chunks of at most :meth:`chunk_size` records written into the batch's
        tensors, so working memory is one batch plus one chunk's intermediates; pass
        ``batch_size=chunk_size()`` to stay within ``memory_mb`` overall."""
        indices = _as_indices(indices)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            out = {k: _empty((len(idx), *s), self.device) for k, s in self._shapes.items()}
            self._fill(out, *dataset.batch(idx))
            yield out

    def cache(self, dataset: Dataset, indices: np.ndarray, path: str | Path) -> FeatureCache:
        """Computes the features of ``indices`` once into ``.npy`` files under ``path`` and
        returns a :class:`FeatureCache` on them.

        Chunks are written with ``pwrite``, not through a memory map: the pages of a mapped file
        count in the process's resident memory as long as they stay mapped, so a memory-mapped
        cache of 20,000 records made the attack's peak memory grow with the count.

        The files are written into a temporary folder beside ``path`` that is renamed to
        ``path`` once complete, so ``path`` only ever holds a finished cache. If ``path`` already
        holds the cache of the same snapshots, spec and indices it is reused as is; a different
        cache there raises FileExistsError.
        """
        path = Path(path)
        indices = _as_indices(indices)
        index = self._cache_index(indices)
        if path.exists():
            return _existing_cache(path, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
        try:
            np.save(tmp / "indices.npy", indices)
            files = {
                k: _NpyRows.create(tmp / c["file"], (len(indices), *c["shape"]))
                for k, c in index["components"].items()
            }
            step, cpu = self.chunk_size(), torch.device("cpu")
            for start in range(0, len(indices), step):
                idx = indices[start : start + step]
                out = {k: _empty((len(idx), *s), cpu) for k, s in self._shapes.items()}
                self._fill(out, *dataset.batch(idx))
                for k, f in files.items():
                    f.write_rows(start, out[k])
            for f in files.values():
                f.close(sync=True)
            del files
            write_json(tmp / CACHE_INDEX, index)
            write_checksums(tmp, _cache_files(index))
            _fsync_dir(tmp)
            os.rename(tmp, path)
            _fsync_dir(path.parent)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if path.exists():  # another process finished the same cache first
                return _existing_cache(path, index)
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return FeatureCache(path, verify=False)  # its checksums were just computed

    def scalar_summaries(self, dataset: Dataset, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Per record and snapshot, ``(N, T)`` float64 arrays: ``loss``, ``correct`` (1 if the
        argmax is the true label), ``confidence`` (probability of the true label),
        ``logit_confidence`` (``log(p / (1 - p))`` of the true label), ``entropy`` (normalised,
        eq. 5), all from the float64 log-softmax of the logits (:func:`prediction_summaries`),
        and, when the spec selects gradient layers, ``grad_norm`` (the L2 norm of the gradients
        of all selected layers together, weights and biases). ``loss``, ``correct``,
        ``confidence``, ``entropy`` and ``grad_norm`` are what the unsupervised attack's decoder
        reconstructs. Streamed chunk by chunk."""
        indices = _as_indices(indices)
        T, step = len(self._snapshots), self.chunk_size()
        keys = ["loss", "correct", "confidence", "logit_confidence", "entropy"]
        if self.grad_layers:
            keys.append("grad_norm")
        out = {k: np.empty((len(indices), T), dtype=np.float64) for k in keys}
        for start in range(0, len(indices), step):
            idx = indices[start : start + step]
            x, y = dataset.batch(idx)
            x, y = x.to(self.device), y.to(self.device)
            rows = slice(start, start + len(idx))
            for t in range(T):
                p = self._snapshot_pass(t, x, y, self.grad_layers, ())
                values = {
                    "correct": (p.logits.argmax(-1) == y).double(),
                    **prediction_summaries(p.logits, y),
                }
                if self.grad_layers:
                    values["grad_norm"] = (
                        sum(g.squared_norm().double() for g in p.grads.values()).sqrt()
                    )
                for k, v in values.items():
                    out[k][rows, t] = v.cpu().numpy()
        return out

    def _zero_record(self) -> torch.Tensor:
        dtype = next(p.dtype for p in self.module.parameters() if p.is_floating_point())
        return torch.zeros(1, *self.input_shape, dtype=dtype, device=self.device)

    def _probe_working_bytes(self) -> int:
        """Peak bytes of the tensors that one snapshot's pass over one zero record allocates on
        top of the parameters; 0 without an input shape."""
        if not self.input_shape:
            return 0
        x = self._zero_record()
        y = torch.zeros(1, dtype=torch.long, device=self.device)
        with _PeakMemory(exclude=[*self._snapshots[0].values(), x, y]) as memory:
            self._snapshot_pass(0, x, y)
        return memory.peak

    # ----- computation

    def _snapshot_pass(
        self,
        t: int,
        x: torch.Tensor,
        y: torch.Tensor,
        grad_layers: Sequence[str] | None = None,
        act_layers: Sequence[str] | None = None,
    ) -> _Pass:
        """Logits, per-example loss, per-example gradients and activations of snapshot ``t``."""
        grad_layers = self.grad_layers if grad_layers is None else grad_layers
        act_layers = self.act_layers if act_layers is None else act_layers
        if not grad_layers:
            return self._forward_pass(t, x, y, act_layers)
        if self.outer_product:
            return self._outer_product_pass(t, x, y, grad_layers, act_layers)
        return self._func_pass(t, x, y, grad_layers, act_layers)

    def _forward_pass(
        self, t: int, x: torch.Tensor, y: torch.Tensor, act_layers: Sequence[str]
    ) -> _Pass:
        """No gradients: one plain batched forward."""
        captured: dict[str, torch.Tensor] = {}
        with self._capture(act_layers, captured), torch.no_grad():
            logits = functional_call(self.module, self._snapshots[t], (x,))
        return self._finish(logits, y, {}, captured, act_layers)

    def _func_pass(
        self,
        t: int,
        x: torch.Tensor,
        y: torch.Tensor,
        grad_layers: Sequence[str],
        act_layers: Sequence[str],
    ) -> _Pass:
        """The torch.func path: ``vmap(grad_and_value)`` of one example's loss."""
        state = self._snapshots[t]
        diff = {k: state[k] for n in grad_layers for k in self._diff_names[n]}
        const = {k: v for k, v in state.items() if k not in diff}
        captured: dict[str, torch.Tensor] = {}

        def one_example(diff, x, y):
            logits = functional_call(self.module, (diff, const), (x.unsqueeze(0),))
            acts = tuple(captured[n].flatten() for n in act_layers)
            return F.cross_entropy(logits, y.unsqueeze(0)), (logits.squeeze(0), acts)

        with self._capture(act_layers, captured), torch.no_grad():
            grads, (loss, (logits, acts)) = vmap(
                grad_and_value(one_example, has_aux=True), in_dims=(None, 0, 0)
            )(diff, x, y)
        return _Pass(
            logits=logits,
            loss=prediction_summaries(logits, y)["loss"],
            grads={
                n: _DenseGrad(grads[f"{n}.weight"], grads.get(f"{n}.bias")) for n in grad_layers
            },
            acts=dict(zip(act_layers, acts, strict=True)),
        )

    def _outer_product_pass(
        self,
        t: int,
        x: torch.Tensor,
        y: torch.Tensor,
        grad_layers: Sequence[str],
        act_layers: Sequence[str],
    ) -> _Pass:
        """The outer-product path: one batched forward and one backward of the summed loss to
        the selected layers' outputs (see the module docstring)."""
        calls: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in grad_layers}
        captured: dict[str, torch.Tensor] = {}
        # Calls recorded first: the capture must follow the output that the recording hook
        # hands on to the rest of the forward.
        with self._record_calls(calls), self._capture(act_layers, captured), torch.enable_grad():
            logits = functional_call(self.module, self._snapshots[t], (x,))
            loss = F.cross_entropy(logits, y, reduction="none")
            if unused := [n for n in grad_layers if not calls[n]]:
                raise ValueError(f"gradient layers {unused} are not used by the model's forward")
            outputs = [out for n in grad_layers for _, out in calls[n]]
            backprops = iter(torch.autograd.grad(loss.sum(), outputs, materialize_grads=True))
        with torch.no_grad():
            grads = {
                n: self._outer_grad(n, [(inp, next(backprops)) for inp, _ in calls[n]])
                for n in grad_layers
            }
            return self._finish(logits.detach(), y, grads, captured, act_layers)

    def _outer_grad(self, name: str, calls: list[tuple[torch.Tensor, torch.Tensor]]) -> _OuterGrad:
        """Layer ``name``'s factors from the (input, gradient at the output) of each call of it:
        the calls' positions concatenated, a ones column appended for the bias."""
        module = self._modules[name]
        factors = [_outer_factors(module, inp.detach(), g) for inp, g in calls]
        backprop = torch.cat([b for b, _ in factors], dim=2) if len(calls) > 1 else factors[0][0]
        inputs = torch.cat([a for _, a in factors], dim=1) if len(calls) > 1 else factors[0][1]
        if module.bias is not None:
            inputs = F.pad(inputs, (0, 1), value=1.0)
        return _OuterGrad(backprop, inputs)

    def _finish(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        grads: dict[str, _DenseGrad | _OuterGrad],
        captured: dict[str, torch.Tensor],
        act_layers: Sequence[str],
    ) -> _Pass:
        """The pass of a batched forward: per-example loss, activations flattened."""
        return _Pass(
            logits=logits,
            loss=prediction_summaries(logits, y)["loss"],
            grads=grads,
            acts={n: captured[n].detach().flatten(1) for n in act_layers},
        )

    @contextmanager
    def _record_calls(
        self, into: dict[str, list[tuple[torch.Tensor, torch.Tensor]]]
    ) -> Iterator[None]:
        """Forward hooks that append ``(input, output)`` of each call of the modules named in
        ``into`` to their list, the output made to require grad (a leaf of the graph unless an
        earlier recorded layer already feeds it), so the backward pass can stop there."""

        def record(name: str, _module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            if not out.requires_grad:
                out = out.detach().requires_grad_()
            into[name].append((args[0], out))
            return out

        handles = [self._modules[n].register_forward_hook(partial(record, n)) for n in into]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def _capture(self, names: Sequence[str], into: dict[str, torch.Tensor]) -> Iterator[None]:
        """Stores into ``into[n]`` the activation output of each module ``n`` in ``names``: a
        forward hook takes the module's output, :class:`_FollowToActivation` follows it to the
        activation function applied to it (module docstring)."""
        if not names:
            yield
            return
        follow = _FollowToActivation(into)
        handles = [
            self._modules[n].register_forward_hook(
                lambda _m, _i, out, n=n: follow.layer_output(n, out)
            )
            for n in names
        ]
        try:
            with follow:
                yield
        finally:
            for h in handles:
                h.remove()

    def _fill(self, out: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> None:
        """Writes the features of records ``(x, y)`` into ``out`` (``{component: (n, *shape)}``,
        on any device), :meth:`chunk_size` records at a time."""
        step = self.chunk_size()
        for s in range(0, len(x), step):
            xs, ys = x[s : s + step].to(self.device), y[s : s + step].to(self.device)
            rows = slice(s, s + len(xs))
            for t in range(len(self._snapshots)):
                self._write(out, rows, t, self._snapshot_pass(t, xs, ys))
        if self.spec.label:
            out["label"].copy_(F.one_hot(y, self.num_classes))

    def _write(self, out: dict[str, torch.Tensor], rows: slice, t: int, p: _Pass) -> None:
        for n, g in p.grads.items():
            g.write(out[f"grad:{n}"][rows, t])
        for n, a in p.acts.items():
            out[f"act:{n}"][rows, t] = a
        if self.spec.output and self.spec.output_scale == "logit":
            out["output"][rows, t] = class_logits(p.logits)
        elif self.spec.output:
            out["output"][rows, t] = p.logits.softmax(-1)
        if self.spec.loss:
            out["loss"][rows, t, 0] = p.loss

    def _cache_index(self, indices: np.ndarray) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "count": len(indices),
            "num_snapshots": len(self._snapshots),
            "num_classes": self.num_classes,
            "spec": asdict(self.spec),
            "layers": {"gradients": list(self.grad_layers), "activations": list(self.act_layers)},
            "snapshots_sha256": _fingerprint(self._snapshots),
            "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
            "components": {
                k: {"file": f"{i:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', k)}.npy", "shape": list(s)}
                for i, (k, s) in enumerate(self._shapes.items())
            },
        }


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


class _PeakMemory(TorchDispatchMode):
    """Peak bytes of the storages that the operations run under this mode allocate and keep
    alive at the same time (storages of the ``exclude`` tensors, e.g. parameters, not counted)."""

    def __init__(self, exclude: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors using it]
        self._current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self._excluded or storage.nbytes() == 0:
            return
        if ptr not in self._live:
            self._live[ptr] = [storage.nbytes(), 0]
            self._current += storage.nbytes()
            self.peak = max(self.peak, self._current)
        self._live[ptr][1] += 1
        weakref.finalize(t, self._release, ptr)

    def _release(self, ptr: int) -> None:
        entry = self._live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            del self._live[ptr]
            self._current -= entry[0]


class FeatureCache:
    """Read side of a feature cache written by :meth:`FeatureExtractor.cache`: rows read from the
    ``.npy`` files on demand (``pread``, never memory-mapped, never unpickled), so holding a
    cache costs no memory. Row ``i`` holds the features of dataset record ``indices[i]``."""

    def __init__(self, path: str | Path, verify: bool = True) -> None:
        self.path = Path(path)
        index_file = self.path / CACHE_INDEX
        if not index_file.is_file():
            raise FileNotFoundError(
                f"no finished feature cache at {self.path} ({CACHE_INDEX} missing)"
            )
        remedy = f"delete {self.path} to recompute the cache"
        try:
            self.index = read_json(index_file)
        except (OSError, ValueError) as err:
            raise CorruptedFile(index_file, f"unreadable ({err})", remedy) from None
        if self.index.get("version") != CACHE_VERSION:
            raise ValueError(
                f"{self.path}: a feature cache of version {self.index.get('version')}, this "
                f"fedattack reads version {CACHE_VERSION}; delete the folder to recompute it"
            )
        self._count = int(self.index["count"])
        try:
            self.indices = np.load(self.path / "indices.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise CorruptedFile(self.path / "indices.npy", f"unreadable ({err})", remedy) from None
        self._files = {
            k: _NpyRows.open(self.path / c["file"], (self._count, *c["shape"]))
            for k, c in self.index["components"].items()
        }
        if verify:  # a zeroed or swapped feature file would silently change the attack
            verify_checksums(self.path, _cache_files(self.index), remedy)

    def __len__(self) -> int:
        return self._count

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(c["shape"]) for k, c in self.index["components"].items()}

    def take(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Features of cache rows ``rows`` (positions, not dataset indices), in that order."""
        rows = _as_indices(rows)
        if rows.size and not (0 <= rows.min() and rows.max() < self._count):
            raise IndexError(f"cache rows must be in [0, {self._count}), got {rows.min()}..."
                             f"{rows.max()}")
        return {k: f.read_rows(rows) for k, f in self._files.items()}

    def batches(
        self, order: np.ndarray | None = None, batch_size: int = 256
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Rows in ``order`` (default: all, in cache order), ``batch_size`` at a time."""
        order = np.arange(self._count) if order is None else _as_indices(order)
        for start in range(0, len(order), batch_size):
            yield self.take(order[start : start + batch_size])


class _NpyRows:
    """A C-ordered float32 ``.npy`` file written and read by rows with ``pwrite``/``preadv``.

    A run of consecutive rows is one system call. The file is a standard ``.npy`` file
    (``np.load`` reads it); it is never mapped into the process (see
    :meth:`FeatureExtractor.cache`)."""

    def __init__(self, path: Path, shape: tuple[int, ...], fd: int, offset: int) -> None:
        self.path, self._fd, self._offset = path, fd, offset
        self._row_shape = shape[1:]
        self._row_bytes = _BYTES * math.prod(self._row_shape)
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def create(cls, path: Path, shape: tuple[int, ...]) -> _NpyRows:
        """A new file of ``shape`` (a header, then zeros until written)."""
        header = {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)}
        with open(path, "wb") as f:
            np.lib.format.write_array_header_2_0(f, header)
            offset = f.tell()
            f.truncate(offset + _BYTES * math.prod(shape))
        return cls(path, tuple(shape), os.open(path, os.O_RDWR), offset)

    @classmethod
    def open(cls, path: Path, shape: tuple[int, ...]) -> _NpyRows:
        """An existing file, checked to hold ``shape`` float32 in C order, all of it."""
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            got, fortran, dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
        if (got, fortran, dtype) != (tuple(shape), False, np.dtype("<f4")) or size != (
            offset + _BYTES * math.prod(shape)
        ):
            raise ValueError(
                f"{path}: shape {got} {dtype}{' (Fortran order)' if fortran else ''}, "
                f"{size} bytes; expected {tuple(shape)} float32 in C order"
            )
        return cls(path, tuple(shape), os.open(path, os.O_RDONLY), offset)

    def write_rows(self, start: int, values: torch.Tensor) -> None:
        """Rows ``start, start + 1, ...`` from ``values`` (a CPU float32 tensor)."""
        data = memoryview(values.contiguous().numpy()).cast("B")
        position = self._offset + start * self._row_bytes
        while data:
            written = os.pwrite(self._fd, data, position)
            data, position = data[written:], position + written

    def read_rows(self, rows: np.ndarray) -> torch.Tensor:
        """Rows ``rows``, in that order, as a ``(len(rows), *row_shape)`` tensor."""
        out = _empty((len(rows), *self._row_shape), torch.device("cpu"))
        if not len(rows):
            return out
        flat = memoryview(out.numpy()).cast("B")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # where a run of consecutive rows starts
        starts, ends = np.concatenate(([0], breaks)), np.concatenate((breaks, [len(rows)]))
        for first, end in zip(starts, ends, strict=True):
            view = flat[first * self._row_bytes : end * self._row_bytes]
            position = self._offset + int(rows[first]) * self._row_bytes
            while view:
                got = os.preadv(self._fd, [view], position)
                if got == 0:
                    raise OSError(f"{self.path}: unexpected end of file")
                view, position = view[got:], position + got
        return out

    def close(self, sync: bool = False) -> None:
        """Closes the file, after ``fsync`` if ``sync``."""
        if sync and self._closer.alive:
            os.fsync(self._fd)
        self._closer()


class _BatchBuffers:
    """Where the CPU buffers of feature batches come from: fresh huge-page memory, or a buffer
    of an earlier batch that no tensor uses any more.

    A buffer of 2 MiB and more is mapped on its own, 2 MiB-aligned, and advised to use
    transparent huge pages (the kernel's usual ``madvise`` mode grants them only on request),
    so its first write faults in one page per 2 MiB instead of per 4 KiB. Fresh memory still
    costs the kernel's zeroing of every page, which on a VM can cost as much as computing the
    gradients: batches of per-example gradients are hundreds of MiB. So, like PyTorch's CUDA
    caching allocator, a freed buffer is kept and handed to the next batch that fits in it.

    A buffer is free when its storage is used by no tensor but the pool's own: every view of a
    batch, a NumPy array made from one (``.numpy()`` holds the tensor) and a tensor saved for
    autograd holds the storage, so a buffer is never reused while anything can still read it.
    At most ``max_free_bytes`` of free buffers are kept; :meth:`release` drops them all."""

    def __init__(self, max_free_bytes: int = 1 << 30) -> None:
        self.max_free_bytes = max_free_bytes
        self._buffers: list[torch.Tensor] = []  # flat float32, one per mapping
        self._idle_uses: dict[int, int] = {}  # id(buffer) -> its storage's use count when free
        self._lock = threading.Lock()

    @staticmethod
    def _uses(buffer: torch.Tensor) -> int:
        return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata)

    def _free(self) -> list[torch.Tensor]:
        return [b for b in self._buffers if self._uses(b) == self._idle_uses[id(b)]]

    def empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        count = math.prod(shape)
        if count * _BYTES < _HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
            return torch.empty(shape)
        with self._lock:
            free = self._free()
            fits = [b for b in free if b.numel() >= count]
            if fits:
                return min(fits, key=torch.Tensor.numel)[:count].view(shape)
            self._trim(free, keep=self.max_free_bytes)
            buf = mmap.mmap(
                -1, count * _BYTES + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
            )
            buf.madvise(mmap.MADV_HUGEPAGE)
            start = -torch.frombuffer(buf, dtype=torch.uint8, count=1).data_ptr() % _HUGE_PAGE
            flat = torch.frombuffer(buf, dtype=torch.float32, count=count, offset=start)
            self._buffers.append(flat)
            self._idle_uses[id(flat)] = self._uses(flat)
            return flat.view(shape)

    def _trim(self, free: list[torch.Tensor], keep: int) -> None:
        """Unmaps the largest free buffers until at most ``keep`` bytes of them are left."""
        for b in sorted(free, key=torch.Tensor.numel, reverse=True):
            if sum(f.numel() for f in free) * _BYTES <= keep:
                break
            free.remove(b)
            self._buffers.remove(b)
            del self._idle_uses[id(b)]

    def release(self) -> None:
        """Unmaps every free buffer (those still in use stay until they are freed and a later
        batch is drawn)."""
        with self._lock:
            self._trim(self._free(), keep=0)

    def held_bytes(self) -> int:
        """Bytes mapped by the pool, in use or free."""
        with self._lock:
            return sum(b.numel() for b in self._buffers) * _BYTES


_BATCH_BUFFERS = _BatchBuffers()


def release_batch_buffers() -> None:
    """Gives the free buffers that feature batches are drawn from back to the OS (see
    :class:`_BatchBuffers`); for long-lived processes after a large feature job."""
    _BATCH_BUFFERS.release()


def _empty(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``torch.empty(shape)`` float32 for a batch of features; on the CPU from
    :data:`_BATCH_BUFFERS`. Its contents are arbitrary: an earlier batch's features."""
    if device.type != "cpu":
        return torch.empty(shape, device=device)
    return _BATCH_BUFFERS.empty(shape)


def _as_indices(indices: np.ndarray | Sequence[int]) -> np.ndarray:
    arr = np.asarray(indices)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"indices must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _fingerprint(snapshots: Sequence[dict[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for snap in snapshots:
        for k in sorted(snap):
            h.update(k.encode())
            h.update(snap[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _cache_files(index: dict[str, Any]) -> list[str]:
    """The files of a finished feature cache that its checksums cover."""
    return ["indices.npy", *(c["file"] for c in index["components"].values()), CACHE_INDEX]


def _existing_cache(path: Path, index: dict[str, Any]) -> FeatureCache:
    """The cache already at ``path`` if it is the one ``index`` describes."""
    if not (path / CACHE_INDEX).is_file():
        raise FileExistsError(f"{path} exists and is not a finished feature cache")
    cache = FeatureCache(path)
    if cache.index != json.loads(json.dumps(index)):
        raise FileExistsError(f"{path} holds a feature cache of other snapshots, spec or records")
    return cache


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
