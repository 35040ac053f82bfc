"""The feature extractor: the features of target records over T snapshots, streamed, cached
on disk or reduced to scalar summaries (see the package docstring)."""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
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

from fedattack.features.activations import _FollowToActivation
from fedattack.features.cache import (
    CACHE_INDEX,
    CACHE_VERSION,
    FeatureCache,
    _as_indices,
    _cache_files,
    _existing_cache,
    _fingerprint,
    _NpyRows,
)
from fedattack.features.gradients import (
    OUTER_PRODUCT,
    TORCH_FUNC,
    _DenseGrad,
    _grad_columns,
    _outer_factors,
    _OuterGrad,
    engine_of,
)
from fedattack.features.memory import _BYTES, _empty, _PeakMemory
from fedattack.features.spec import FeatureSpec, class_logits, prediction_summaries, resolve_layers
from fedattack.io import fsync_dir, write_checksums, write_json


class Dataset(Protocol):
    num_classes: int
    input_shape: tuple[int, ...]

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class _Pass:
    """What one snapshot yields for one chunk of records."""

    logits: torch.Tensor  # (n, C)
    loss: torch.Tensor  # (n,) float64, never rounded to 0 (see prediction_summaries)
    grads: dict[str, _DenseGrad | _OuterGrad]  # layer -> its per-example gradients
    acts: dict[str, torch.Tensor]  # layer -> (n, d)


class _SnapshotHash:
    """The SHA-256 of the snapshots' tensors, computed on first use and then kept: every
    extractor derived with :meth:`FeatureExtractor.with_spec` shares one."""

    def __init__(self, snapshots: list[dict[str, torch.Tensor]]) -> None:
        self._snapshots, self._value = snapshots, None

    def hexdigest(self) -> str:
        if self._value is None:
            self._value = _fingerprint(self._snapshots)
        return self._value


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
    """Layer types allowed the outer-product engine, where :data:`gradients.REGISTRY` has a rule
    for them that applies (not a ``groups > 1`` convolution, nor padding by a mode or a string).
    Chosen per layer: a selected layer of another type takes the torch.func engine alone, the
    others keep the outer products (:attr:`engines`). Empty: torch.func for every layer."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        spec: FeatureSpec,
        num_classes: int,
        device: str | torch.device = "cpu",
        memory_mb: float = 256.0,
        input_shape: tuple[int, ...] | None = None,
        *,
        _shared: tuple[list[dict[str, torch.Tensor]], _SnapshotHash] | None = None,
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
        if _shared is not None:  # with_spec: the same snapshots, neither copied nor re-hashed
            self._snapshots, self._hash = _shared
        else:
            self._snapshots = [self._tensors(m) for m in models]
            self._check_same_architecture(models)
            self._hash = _SnapshotHash(self._snapshots)
        self._models = tuple(models)
        self._diff_names = {
            n: [f"{n}.{p}" for p in ("weight", "bias") if getattr(self._modules[n], p) is not None]
            for n in self.grad_layers
        }
        self.engines: dict[str, str] = {
            n: engine_of(self._modules[n], self.OUTER_PRODUCT_LAYERS) for n in self.grad_layers
        }
        """Selected gradient layer -> the engine that computes its per-example gradients:
        ``"outer-product"`` or ``"torch.func"`` (:mod:`fedattack.features.gradients`)."""
        self.input_shape = tuple(input_shape or getattr(self.module, "input_shape", ()))
        self._shapes = self._component_shapes()
        if not self._shapes:
            raise ValueError(f"the feature spec selects nothing: {spec}")
        self._grad_bytes = _BYTES * sum(
            math.prod(s[1:]) for k, s in self._shapes.items() if k.startswith("grad:")
        )
        self._working_bytes = self._probe_working_bytes()

    @property
    def outer_product(self) -> bool:
        """Whether every selected gradient layer takes the outer-product engine."""
        return all(e == OUTER_PRODUCT for e in self.engines.values())

    def with_spec(self, spec: FeatureSpec) -> FeatureExtractor:
        """An extractor of the same snapshots (same device and memory bound) for another spec:
        the snapshots' tensors are shared, not copied, and their hash is computed at most once
        for all extractors derived from this one."""
        return type(self)(self._models, spec, self.num_classes, self.device, self.memory_mb,
                          self.input_shape or None, _shared=(self._snapshots, self._hash))

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
            fit = min(fit, int(self.OUTER_CHUNK_GRAD_MB * 2**20) // self._grad_bytes)
        func_bytes = _BYTES * sum(
            math.prod(self._shapes[f"grad:{n}"][1:])
            for n, e in self.engines.items() if e == TORCH_FUNC
        )
        if func_bytes:  # the torch.func layers' raw gradients are materialised per example
            fit = min(fit, int(self.CHUNK_GRAD_MB * 2**20) // func_bytes)
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
            fsync_dir(tmp)
            os.rename(tmp, path)
            fsync_dir(path.parent)
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
        outer = [n for n in grad_layers if self.engines[n] == OUTER_PRODUCT]
        func = [n for n in grad_layers if self.engines[n] == TORCH_FUNC]
        if not func:
            return self._outer_product_pass(t, x, y, grad_layers, act_layers)
        if not outer:
            return self._func_pass(t, x, y, grad_layers, act_layers)
        # Per layer: the outer products for the layers that have them (with the logits, loss
        # and activations), torch.func for the others only, its backward stopping at them.
        p = self._outer_product_pass(t, x, y, outer, act_layers)
        dense = self._func_pass(t, x, y, func, ()).grads
        p.grads = {n: p.grads[n] if n in p.grads else dense[n] for n in grad_layers}
        return p

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
            "snapshots_sha256": self._hash.hexdigest(),
            "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest(),
            "components": {
                k: {"file": f"{i:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', k)}.npy", "shape": list(s)}
                for i, (k, s) in enumerate(self._shapes.items())
            },
        }

