"""White-box attack features: per-example gradients (the outer-product path and the torch.func
path) against a plain autograd loop, stacking over T snapshots, streaming in chunks, the on-disk
cache, layer addressing, and the scalar summaries the unsupervised attack reconstructs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedattack.config import AttackConfig
from fedattack.features import (
    CACHE_VERSION,
    FeatureCache,
    FeatureExtractor,
    FeatureSpec,
    _BatchBuffers,
    class_logits,
    normalised_entropy,
    per_example_grads_loop,
    prediction_summaries,
    true_class_logit_confidence,
)
from fedattack.models import build_model, layer_names
from tests.fakes import ArrayDataset

NUM_CLASSES = 10
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
FAMILIES = [
    ("fc", MNIST),
    ("cnn", MNIST),
    ("cnn-gan", MNIST),
    ("alexnet", CIFAR),
    ("resnet20", CIFAR),
    ("densenet-bc-100-12", CIFAR),
]

pytestmark = pytest.mark.usefixtures("one_thread")


class FuncExtractor(FeatureExtractor):
    """Per-example gradients by torch.func for every layer type."""

    OUTER_PRODUCT_LAYERS = ()


EXTRACTORS = [FeatureExtractor, FuncExtractor]
PATHS = ["outer-product", "torch.func"]


def make_model(arch: str, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return with_batchnorm_statistics(build_model(arch, shape, NUM_CLASSES), shape)


def with_batchnorm_statistics(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """The model in eval mode; BatchNorm running statistics set from a few random batches, so
    that eval-mode activations (and gradients) have realistic magnitudes."""
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    if batchnorms:
        for m in batchnorms:
            m.momentum = None  # cumulative average
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(8, *shape))
    return model.eval()


def make_data(shape: tuple[int, ...], n: int, seed: int = 1) -> ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return ArrayDataset(x, y, NUM_CLASSES)


def features(extractor: FeatureExtractor, data: ArrayDataset, idx, batch_size: int = 256):
    """All batches of `idx`, concatenated."""
    batches = list(extractor.batches(data, np.asarray(idx), batch_size))
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def assert_close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal up to `rel` times the tensor's scale (CIFAR gradients reach 1e1..1e2)."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(got.double(), want.double(), rtol=10 * rel, atol=rel * scale)


def record_mb(
    spec: FeatureSpec, snapshots: list[nn.Module], extractor_class: type = FeatureExtractor
) -> float:
    """memory_mb one record takes in a chunk."""
    probe = extractor_class(snapshots, spec, NUM_CLASSES)
    return (probe.record_bytes() + probe.working_bytes()) / 2**20


# ----- gradients: torch.func against autograd, every model family


@pytest.mark.parametrize(
    ("dtype", "rel"),
    # float64 pins the computation down to the float32 rounding of the stored features; float32
    # through DenseNet-BC-100's hundred layers accumulates relative differences near 1e-3
    [(torch.float64, 1e-6), (torch.float32, 5e-3)],
    ids=["float64", "float32"],
)
@pytest.mark.parametrize(("arch", "shape"), FAMILIES, ids=[a for a, _ in FAMILIES])
@pytest.mark.parametrize("extractor_class", EXTRACTORS, ids=PATHS)
def test_gradients_equal_autograd_loop(arch, shape, dtype, rel, extractor_class):
    model = make_model(arch, shape).to(dtype)
    data = make_data(shape, 3)
    data.x = data.x.to(dtype)
    names = layer_names(model)
    layers = (names[len(names) // 2], names[-1])
    spec = FeatureSpec(gradients=layers, output=False, loss=False, label=False)
    extractor = extractor_class([model], spec, NUM_CLASSES)
    # every family's layers are Linear or ungrouped Conv2d
    assert extractor.outer_product == (extractor_class is FeatureExtractor)
    got = features(extractor, data, [0, 1, 2])
    want = per_example_grads_loop(model, data.x, data.y, layers)
    modules = dict(model.named_modules())
    assert set(got) == {f"grad:{n}" for n in layers}
    for n in layers:
        module = modules[n]
        has_bias = module.bias is not None
        rows, cols = module.weight.shape[0], module.weight[0].numel() + has_bias
        assert got[f"grad:{n}"].shape == (3, 1, rows, cols)
        assert_close(got[f"grad:{n}"][:, 0], want[n], rel)
        # the layout itself: rows = output units, bias in the last column
        x, y = data.x[1:2], data.y[1:2]
        w_grad, *b_grad = torch.autograd.grad(
            F.cross_entropy(model(x), y), [p for p in (module.weight, module.bias) if p is not None]
        )
        assert_close(got[f"grad:{n}"][1, 0, :, : module.weight[0].numel()], w_grad.flatten(1), rel)
        if has_bias:
            assert_close(got[f"grad:{n}"][1, 0, :, -1], b_grad[0], rel)
    # the records differ, so their gradients differ: a mix-up of records would show
    g = got[f"grad:{layers[-1]}"]
    assert not torch.allclose(g[0], g[1])


@pytest.mark.parametrize("extractor_class", EXTRACTORS, ids=PATHS)
def test_gradients_differ_between_records_and_per_record_sum_is_batch_gradient(extractor_class):
    model = make_model("cnn", MNIST)
    data = make_data(MNIST, 5)
    spec = FeatureSpec(gradients=(-1,), output=False, loss=False, label=False)
    got = features(extractor_class([model], spec, NUM_CLASSES), data, range(5))["grad:classifier"]
    batch_loss = F.cross_entropy(model(data.x), data.y, reduction="sum")
    w, b = torch.autograd.grad(batch_loss, [model.classifier.weight, model.classifier.bias])
    assert_close(got[:, 0].sum(0), torch.cat((w, b[:, None]), 1))


class MixedNet(nn.Module):
    """What the outer-product path must get right beyond the model zoo: BatchNorm and Dropout
    (eval mode), a strided, padded convolution, a dilated one with a non-square kernel and no
    bias, a grouped one (torch.func only), a Linear over a sequence axis, one Linear applied
    twice, and one without bias, each selectable in the middle of the network."""

    input_shape = MNIST

    def __init__(self) -> None:
        super().__init__()
        self.strided = nn.Conv2d(1, 4, 3, stride=2, padding=1)  # -> 4 x 14 x 14
        self.bn2d = nn.BatchNorm2d(4)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.dilated = nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=(1, 2), bias=False)
        self.dropout = nn.Dropout(0.5)
        self.sequence = nn.Linear(6, 8)  # over 8 x 7 positions
        self.shared = nn.Linear(8, 8)  # applied twice
        self.bn1d = nn.BatchNorm1d(8)
        self.unbiased = nn.Linear(8, 8, bias=False)
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.grouped(torch.tanh(self.bn2d(self.strided(x)))))
        h = F.avg_pool2d(torch.tanh(self.dropout(self.dilated(h))), 2)  # 6 x 8 x 7
        h = torch.tanh(self.sequence(h.flatten(2).transpose(1, 2))).mean(1)
        h = torch.tanh(self.shared(torch.tanh(self.shared(h))))
        return self.head(self.dropout(torch.tanh(self.unbiased(self.bn1d(h)))))


@pytest.mark.parametrize(
    "layers",
    [
        ("strided", "dilated", "sequence", "shared", "unbiased", "head"),
        ("dilated",),
        ("sequence", "shared"),
        ("grouped", "head"),
    ],
    ids=["all-but-grouped", "middle-conv", "middle-linear", "with-grouped"],
)
@pytest.mark.parametrize("extractor_class", EXTRACTORS, ids=PATHS)
def test_gradients_of_mixed_layers_equal_autograd_loop(layers, extractor_class):
    torch.manual_seed(0)
    model = with_batchnorm_statistics(MixedNet(), MNIST).double()
    data = make_data(MNIST, 4)
    data.x = data.x.double()
    spec = FeatureSpec(gradients=layers, activations=("shared",))
    extractor = extractor_class([model, model], spec, NUM_CLASSES)
    assert extractor.outer_product == (
        extractor_class is FeatureExtractor and "grouped" not in layers
    )
    got = features(extractor, data, range(4))
    want = per_example_grads_loop(model, data.x, data.y, layers)
    for n in layers:
        for t in range(2):
            assert_close(got[f"grad:{n}"][:, t], want[n], 1e-6)
    with torch.no_grad():
        logits = model(data.x)
    assert_close(got["loss"][:, 1, 0], F.cross_entropy(logits, data.y, reduction="none"))
    norm = sum(want[n].flatten(1).square().sum(1) for n in layers).sqrt()
    summaries = extractor.scalar_summaries(data, np.arange(4))
    assert_close(torch.from_numpy(summaries["grad_norm"][:, 1]), norm)


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.unused, self.head = nn.Linear(4, 4), nn.Linear(4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_a_gradient_layer_the_forward_pass_never_calls_is_refused():
    with pytest.raises(ValueError, match=r"\['unused'\] are not used"):
        FeatureExtractor(
            [Unused()], FeatureSpec(gradients=("unused",)), NUM_CLASSES, input_shape=(4,)
        )


# Where each chosen layer's activation output can be read off a plain forward: the output of
# the module named (the FC model's Tanh after each Linear; a ResNet block, whose last step is
# relu(bn2(conv2) + shortcut)), with `then` applied (the ResNet stem's relu(bn1(conv1)) is
# functional); the output layer has no activation: its logits.
ACTIVATION_OUTPUTS = {
    "fc": {"features.0": ("features.1", None), "features.4": ("features.5", None),
           "classifier": ("classifier", None)},
    "resnet20": {"conv1": ("bn1", F.relu), "layer2.1.conv1": ("layer2.1.bn1", F.relu),
                 "layer2.1.conv2": ("layer2.1", None), "fc": ("fc", None)},
}


@pytest.mark.parametrize(("arch", "shape"), [("fc", MNIST), ("resnet20", CIFAR)])
def test_activations_output_and_loss_match_a_plain_forward(arch, shape):
    model = make_model(arch, shape)
    data = make_data(shape, 4)
    chosen = tuple(ACTIVATION_OUTPUTS[arch])
    assert set(chosen) <= set(layer_names(model))
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[at].register_forward_hook(
            lambda _m, _i, o, n=n, then=then: seen.__setitem__(n, then(o) if then else o)
        )
        for n, (at, then) in ACTIVATION_OUTPUTS[arch].items()
    ]
    with torch.no_grad():
        logits = model(data.x)
    for h in hooks:
        h.remove()
    assert (seen[chosen[0]] >= 0).all() if arch == "resnet20" else (seen[chosen[0]].abs() < 1).all()
    with_grads, without = (FeatureSpec(gradients=g, activations=chosen) for g in ((-1,), ()))
    for extractor in (
        FeatureExtractor([model], with_grads, NUM_CLASSES),  # the outer-product pass
        FuncExtractor([model], with_grads, NUM_CLASSES),  # the vmapped pass
        FeatureExtractor([model], without, NUM_CLASSES),  # the plain batched pass
    ):
        got = features(extractor, data, range(4))
        for n in chosen:
            assert extractor.shapes()[f"act:{n}"] == (1, seen[n][0].numel())
            assert_close(got[f"act:{n}"][:, 0], seen[n].flatten(1))
        assert_close(got["output"][:, 0], logits.softmax(-1))
        assert_close(got["loss"][:, 0, 0], F.cross_entropy(logits, data.y, reduction="none"))
        assert torch.equal(got["label"], F.one_hot(data.y, NUM_CLASSES).float())


class NoActivationAfter(nn.Module):
    """``a``'s output is scaled before its ReLU: its activation output is its own output; ``b``'s
    passes through dropout and a residual addition to a Tanh."""

    input_shape = (4,)

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, NUM_CLASSES)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(2 * self.a(x))
        return self.out(torch.tanh(self.dropout(self.b(h)) + h))


def test_a_layer_whose_output_is_used_otherwise_than_by_an_activation_gives_its_own_output():
    model = NoActivationAfter().eval()
    data = ArrayDataset(torch.randn(3, 4), torch.tensor([0, 1, 2]), NUM_CLASSES)
    extractor = FeatureExtractor([model], FeatureSpec((), ("a", "b")), NUM_CLASSES)
    got = features(extractor, data, range(3))
    with torch.no_grad():
        a = model.a(data.x)
        b = torch.tanh(model.b(F.relu(2 * a)) + F.relu(2 * a))
    assert_close(got["act:a"][:, 0], a)
    assert_close(got["act:b"][:, 0], b)


# ----- T snapshots


def test_stacking_over_snapshots():
    snapshots = [make_model("cnn", MNIST, seed=s) for s in range(3)]
    data = make_data(MNIST, 4)
    spec = FeatureSpec(gradients=("hidden", -1), activations=(-2,))
    stacked = FeatureExtractor(snapshots, spec, NUM_CLASSES)
    shapes = stacked.shapes()
    assert shapes == {
        "grad:hidden": (3, 128, 64 * 7 * 7 + 1),
        "grad:classifier": (3, NUM_CLASSES, 129),
        "act:hidden": (3, 128),
        "output": (3, NUM_CLASSES),
        "loss": (3, 1),
        "label": (NUM_CLASSES,),
    }
    got = features(stacked, data, range(4))
    for k, s in shapes.items():
        assert got[k].shape == (4, *s) and got[k].dtype == torch.float32
    for t, model in enumerate(snapshots):
        alone = features(FeatureExtractor([model], spec, NUM_CLASSES), data, range(4))
        for k in shapes:
            if k == "label":
                assert torch.equal(got[k], alone[k])
            else:
                assert torch.equal(got[k][:, t], alone[k][:, 0]), (k, t)
    # the snapshots differ, so their slices differ
    assert not torch.allclose(got["loss"][:, 0], got["loss"][:, 1])


def test_snapshots_of_different_architectures_are_refused():
    with pytest.raises(ValueError, match="snapshot 1"):
        FeatureExtractor(
            [make_model("cnn", MNIST), make_model("cnn-gan", MNIST)], FeatureSpec(), NUM_CLASSES
        )


def test_models_are_put_in_eval_mode():
    model = make_model("resnet20", CIFAR).train()
    FeatureExtractor([model], FeatureSpec(), NUM_CLASSES)
    assert not any(m.training for m in model.modules())


# ----- streaming, chunking, cache


def test_streaming_in_small_chunks_equals_one_big_chunk():
    snapshots = [make_model("fc", MNIST, seed=s) for s in range(2)]
    data = make_data(MNIST, 11)
    spec = FeatureSpec(gradients=(-2, -1), activations=(-1,))
    big = FeatureExtractor(snapshots, spec, NUM_CLASSES, memory_mb=1024)
    small = FeatureExtractor(
        snapshots, spec, NUM_CLASSES, memory_mb=3.5 * record_mb(spec, snapshots)
    )
    assert big.chunk_size() >= 11 and small.chunk_size() == 3

    chunks: list[int] = []
    compute = small._snapshot_pass
    small._snapshot_pass = lambda t, x, y, *a: chunks.append(len(x)) or compute(t, x, y, *a)

    order = np.array([7, 3, 10, 0, 5, 1, 9, 2, 8, 4, 6])
    want = features(big, data, order, batch_size=11)
    got = features(small, data, order, batch_size=11)
    assert chunks == [3, 3, 3, 3, 3, 3, 2, 2]  # 4 chunks, each for T = 2 snapshots
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    # in the order of `indices`
    natural = features(big, data, range(11), batch_size=11)
    for k in want:
        torch.testing.assert_close(want[k], natural[k][order], rtol=1e-5, atol=1e-6)
    batches = list(small.batches(data, order, batch_size=4))
    assert [len(b["loss"]) for b in batches] == [4, 4, 3]


BIG = (3, 2**19)  # 6 MiB of float32: drawn from mapped buffers, not torch.empty


def test_batch_buffers_are_reused_only_once_nothing_uses_them():
    pool = _BatchBuffers()
    a = pool.empty(BIG)
    ptr = a.data_ptr()
    assert ptr % (2 * 2**20) == 0  # huge-page aligned
    view, array = a[1:], a[2].numpy()
    del a
    b = pool.empty(BIG)  # a's buffer is still read through `view` and `array`
    assert b.data_ptr() != ptr
    del view
    c = pool.empty(BIG)  # ... through `array`
    assert c.data_ptr() not in (ptr, b.data_ptr())
    del array
    d = pool.empty((2, 2**19))  # a smaller batch fits in a freed buffer
    assert d.data_ptr() == ptr and d.shape == (2, 2**19)
    assert pool.held_bytes() >= 3 * 6 * 2**20
    del b, c, d
    pool.release()
    assert pool.held_bytes() == 0
    assert pool.empty((4,)).shape == (4,)  # small tensors: plain torch.empty
    assert pool.held_bytes() == 0


def test_batch_buffers_keep_at_most_their_cap_of_free_memory():
    pool = _BatchBuffers(max_free_bytes=8 * 2**20)
    first, second = pool.empty(BIG), pool.empty(BIG)
    del first, second  # 12 MiB free, over the cap: kept until the next fresh mapping
    third = pool.empty((5, 2**19))  # fits in neither: maps a new one, trims the free to 8 MiB
    assert pool.held_bytes() == (3 + 5) * 2**21
    del third


def test_streamed_batches_in_reused_buffers_equal_fresh_ones():
    """Batches written into an earlier batch's buffer hold exactly their own features, while
    a batch the consumer keeps is never overwritten."""
    model = make_model("fc", MNIST, seed=0)
    data = make_data(MNIST, 24)
    spec = FeatureSpec(gradients=(-2, -1), activations=(-1,))
    extractor = FeatureExtractor([model], spec, NUM_CLASSES)
    assert extractor.shapes()["grad:" + extractor.grad_layers[0]][1:] == (128, 257)
    kept = [
        {k: v.clone() for k, v in b.items()}
        for b in extractor.batches(data, np.arange(24), batch_size=16)
    ]
    held = list(extractor.batches(data, np.arange(24), batch_size=16))  # all alive at once
    pointers = {b[k].data_ptr() for b in held for k in b}
    assert len(pointers) == sum(len(b) for b in held)
    for want, got in zip(kept, held, strict=True):
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    del held
    for want, got in zip(kept, extractor.batches(data, np.arange(24), 16), strict=True):
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_chunk_size_accounts_for_working_memory():
    model = make_model("resnet20", CIFAR)
    first = FeatureExtractor([model], FeatureSpec(gradients=(0,)), NUM_CLASSES, memory_mb=64)
    last = FeatureExtractor([model], FeatureSpec(gradients=(-1,)), NUM_CLASSES, memory_mb=64)
    # conv1's gradient is tiny, but backpropagating to it keeps the whole network's activations
    assert first.record_bytes() < 4096 < 100 * first.record_bytes() < first.working_bytes()
    assert last.working_bytes() < first.working_bytes() / 4
    per_record = first.record_bytes() + first.working_bytes()
    assert first.chunk_size() == 64 * 2**20 // per_record
    # large per-example gradients: chunks capped at CHUNK_GRAD_MB of one snapshot's gradients
    # on the torch.func path, which materialises them, at OUTER_CHUNK_GRAD_MB on the outer-product
    # path, which writes them straight into the features
    fc = make_model("fc", MNIST)
    spec = FeatureSpec(gradients=(-2, -1))
    capped = FuncExtractor([fc, fc], spec, NUM_CLASSES, memory_mb=4096)
    grad_bytes = 4 * sum(s[1] * s[2] for k, s in capped.shapes().items() if k.startswith("grad"))
    assert capped.working_bytes() >= grad_bytes
    assert capped.chunk_size() == int(capped.CHUNK_GRAD_MB * 2**20) // grad_bytes
    outer = FeatureExtractor([fc, fc], spec, NUM_CLASSES, memory_mb=4096)
    assert outer.working_bytes() < grad_bytes / 10
    assert outer.chunk_size() == int(outer.OUTER_CHUNK_GRAD_MB * 2**20) // grad_bytes
    assert outer.chunk_size() > capped.chunk_size()


def test_cache_round_trip(tmp_path):
    snapshots = [make_model("cnn-gan", MNIST, seed=s) for s in range(2)]
    data = make_data(MNIST, 9)
    spec = FeatureSpec(gradients=(-1,), activations=("hidden",))
    extractor = FeatureExtractor(
        snapshots, spec, NUM_CLASSES, memory_mb=4.5 * record_mb(spec, snapshots)
    )
    assert extractor.chunk_size() == 4
    idx = np.array([8, 1, 4, 0, 6, 2, 7, 3, 5])
    want = features(extractor, data, idx)

    cache = extractor.cache(data, idx, tmp_path / "feats")
    assert len(cache) == 9 and cache.shapes() == extractor.shapes()
    assert np.array_equal(cache.indices, idx)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feats"]  # no temporary left over
    index = json.loads((tmp_path / "feats" / "index.json").read_text())
    assert index["count"] == 9 and index["num_snapshots"] == 2

    reopened = FeatureCache(tmp_path / "feats")
    got = {k: torch.cat([b[k] for b in reopened.batches(batch_size=4)]) for k in want}
    for k in want:
        assert torch.equal(got[k], want[k]), k
    order = np.array([3, 4, 5, 0, 8, 6, 7, 1])  # runs of consecutive rows and single rows
    taken = reopened.take(order)
    for k in want:
        assert torch.equal(taken[k], want[k][order]), k
    shuffled = list(reopened.batches(order, batch_size=3))
    assert [len(b["loss"]) for b in shuffled] == [3, 3, 2]
    assert torch.equal(torch.cat([b["output"] for b in shuffled]), want["output"][order])

    # computed once: a second call reads the finished cache; another request is refused
    extractor._snapshot_pass = None  # would fail if called
    again = extractor.cache(data, idx, tmp_path / "feats")
    assert torch.equal(again.take(np.arange(9))["loss"], want["loss"])
    with pytest.raises(FileExistsError):
        extractor.cache(data, idx[:5], tmp_path / "feats")


def test_cache_files_are_standard_npy_files_and_never_mapped(tmp_path):
    """Mapped file pages count as resident memory: a cache read or written through a memory map
    made the attack's peak memory grow with the number of records."""
    data = make_data(MNIST, 6)
    extractor = FeatureExtractor([make_model("cnn", MNIST)], FeatureSpec(), NUM_CLASSES)
    cache = extractor.cache(data, np.arange(6), tmp_path / "feats")
    batch = cache.take(np.arange(6))
    assert str(tmp_path) not in Path("/proc/self/maps").read_text()
    for k, c in cache.index["components"].items():
        on_disk = np.load(tmp_path / "feats" / c["file"], allow_pickle=False)
        assert torch.equal(torch.from_numpy(on_disk), batch[k]), k
    with pytest.raises(IndexError, match=r"cache rows must be in \[0, 6\)"):
        cache.take(np.array([2, 6]))


def test_cache_refuses_a_truncated_file(tmp_path):
    extractor = FeatureExtractor([make_model("cnn", MNIST)], FeatureSpec(), NUM_CLASSES)
    cache = extractor.cache(make_data(MNIST, 4), np.arange(4), tmp_path / "feats")
    loss = tmp_path / "feats" / cache.index["components"]["loss"]["file"]
    loss.write_bytes(loss.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r"expected \(4, 1, 1\) float32"):
        FeatureCache(tmp_path / "feats")


def test_a_cache_of_another_version_is_refused_with_what_to_do(tmp_path):
    extractor = FeatureExtractor([make_model("cnn", MNIST)], FeatureSpec(), NUM_CLASSES)
    extractor.cache(make_data(MNIST, 2), np.arange(2), tmp_path / "feats")
    index = tmp_path / "feats" / "index.json"
    index.write_text(index.read_text().replace(f'"version": {CACHE_VERSION}', '"version": 1'))
    refused = f"version 1, this fedattack reads version {CACHE_VERSION}; delete"
    with pytest.raises(ValueError, match=refused):
        FeatureCache(tmp_path / "feats")


def test_cache_refuses_unfinished_folder(tmp_path):
    (tmp_path / "feats").mkdir()
    with pytest.raises(FileNotFoundError):
        FeatureCache(tmp_path / "feats")
    extractor = FeatureExtractor([make_model("cnn", MNIST)], FeatureSpec(), NUM_CLASSES)
    with pytest.raises(FileExistsError):
        extractor.cache(make_data(MNIST, 2), np.arange(2), tmp_path / "feats")


# ----- layer addressing and specs


def test_layers_by_name_and_by_negative_index():
    model = make_model("fc", MNIST)
    data = make_data(MNIST, 3)
    names = layer_names(model)
    by_name = FeatureExtractor(
        [model],
        FeatureSpec(gradients=(names[-2], "classifier"), activations=(names[1],)),
        NUM_CLASSES,
    )
    by_index = FeatureExtractor(
        [model], FeatureSpec(gradients=(-2, -1), activations=(-len(names) + 1,)), NUM_CLASSES
    )
    assert by_name.shapes() == by_index.shapes()
    assert list(by_name.shapes())[:3] == [f"grad:{names[-2]}", "grad:classifier", f"act:{names[1]}"]
    a, b = features(by_name, data, range(3)), features(by_index, data, range(3))
    for k in a:
        assert torch.equal(a[k], b[k])


def test_unknown_layer_lists_the_available_names():
    model = make_model("cnn", MNIST)
    with pytest.raises(ValueError, match="unknown layer 'fc9'") as err:
        FeatureExtractor([model], FeatureSpec(gradients=("fc9",)), NUM_CLASSES)
    for n in layer_names(model):
        assert n in str(err.value)
    with pytest.raises(ValueError, match="available: features.0, features.3, hidden, classifier"):
        FeatureExtractor([model], FeatureSpec(activations=(-5,)), NUM_CLASSES)


def test_spec_presets():
    model = make_model("cnn", MNIST)
    white = FeatureExtractor([model], FeatureSpec.all_activations(model), NUM_CLASSES)
    assert list(white.shapes()) == [f"act:{n}" for n in layer_names(model)] + [
        "output",
        "loss",
        "label",
    ]
    black = FeatureExtractor([model], FeatureSpec.black_box(), NUM_CLASSES)
    assert black.shapes() == {"output": (1, NUM_CLASSES), "label": (NUM_CLASSES,)}
    with pytest.raises(ValueError, match="selects nothing"):
        FeatureExtractor(
            [model], FeatureSpec(gradients=(), output=False, loss=False, label=False), NUM_CLASSES
        )


# ----- scalar summaries


def test_normalised_entropy():
    uniform = torch.full((2, 7), 1 / 7)
    assert torch.allclose(normalised_entropy(uniform), torch.ones(2))
    one_hot = F.one_hot(torch.tensor([0, 6]), 7).float()
    assert torch.equal(normalised_entropy(one_hot), torch.zeros(2))
    mixed = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert torch.allclose(normalised_entropy(mixed), torch.tensor([0.5]))


def test_scalar_summaries_of_uniform_and_one_hot_predictions():
    data = make_data(MNIST, 6)
    uniform = make_model("cnn", MNIST)
    with torch.no_grad():
        uniform.classifier.weight.zero_()
        uniform.classifier.bias.zero_()
    peaked = make_model("cnn", MNIST, seed=1)
    with torch.no_grad():
        peaked.classifier.weight.zero_()
        peaked.classifier.bias.copy_(torch.arange(NUM_CLASSES) == 3).mul_(200.0)
    s = FeatureExtractor([uniform, peaked], FeatureSpec(), NUM_CLASSES).scalar_summaries(
        data, np.arange(6)
    )
    assert set(s) == {"loss", "correct", "confidence", "logit_confidence", "entropy", "grad_norm"}
    assert all(v.shape == (6, 2) and v.dtype == np.float64 for v in s.values())
    assert np.allclose(s["entropy"][:, 0], 1.0, atol=1e-6)
    assert np.allclose(s["confidence"][:, 0], 1 / NUM_CLASSES)
    assert np.allclose(s["loss"][:, 0], np.log(NUM_CLASSES), atol=1e-5)
    assert np.all(s["entropy"][:, 1] < 1e-6)
    hit = data.y.numpy() == 3
    assert np.array_equal(s["correct"][:, 1], hit.astype(np.float32))
    assert np.allclose(s["confidence"][:, 1], hit, atol=1e-6)
    # a margin of 200: -log p = log(1 + 9 exp(-200)), about 9 exp(-200), not the 0 of float32
    assert hit.any()
    np.testing.assert_allclose(s["loss"][hit, 1], 9 * np.exp(-200.0), rtol=1e-12)
    np.testing.assert_allclose(s["logit_confidence"][hit, 1], 200 - np.log(9), rtol=1e-12)
    np.testing.assert_allclose(s["logit_confidence"][~hit, 1], -200.0, rtol=1e-12)


@pytest.mark.parametrize("extractor_class", EXTRACTORS, ids=PATHS)
def test_scalar_summaries_agree_with_the_features(extractor_class):
    snapshots = [make_model("fc", MNIST, seed=s) for s in range(2)]
    data = make_data(MNIST, 7)
    spec = FeatureSpec(gradients=(-2, -1))
    idx = np.array([6, 0, 3, 1, 5, 2, 4])
    extractor = extractor_class(
        snapshots, spec, NUM_CLASSES, memory_mb=2.5 * record_mb(spec, snapshots, extractor_class)
    )
    assert extractor.chunk_size() == 2
    s = extractor.scalar_summaries(data, idx)
    f = features(FeatureExtractor(snapshots, spec, NUM_CLASSES), data, idx)
    y = data.y[idx]
    correct = (f["output"].argmax(-1) == y[:, None]).float()
    np.testing.assert_array_equal(s["correct"], correct.numpy())
    np.testing.assert_allclose(s["loss"], f["loss"][..., 0].numpy(), rtol=1e-5)
    confidence = f["output"].gather(2, y[:, None, None].expand(-1, 2, 1))[..., 0]
    np.testing.assert_allclose(s["confidence"], confidence.numpy(), rtol=1e-5)
    np.testing.assert_allclose(s["entropy"], normalised_entropy(f["output"]).numpy(), rtol=1e-5)
    grads = torch.cat([f[k].flatten(2) for k in f if k.startswith("grad:")], dim=2)
    np.testing.assert_allclose(s["grad_norm"], grads.norm(dim=2).numpy(), rtol=1e-5)
    # the norm covers both layers: the last layer alone is smaller
    last = f["grad:classifier"].flatten(2).norm(dim=2).numpy()
    assert np.all(s["grad_norm"] > last)


def test_scalar_summaries_without_gradient_layers_have_no_grad_norm():
    model = make_model("cnn", MNIST)
    s = FeatureExtractor([model], FeatureSpec.black_box(), NUM_CLASSES).scalar_summaries(
        make_data(MNIST, 3), np.arange(3)
    )
    assert set(s) == {"loss", "correct", "confidence", "logit_confidence", "entropy"}


def test_logit_confidence_is_log_p_over_one_minus_p():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1.5, 3.0, -0.5], [-2.0, 1.0, 4.0]])
    y = torch.tensor([0, 2, 1, 0])
    got = true_class_logit_confidence(logits, y)
    assert got.dtype == torch.float64
    for row, label, value in zip(logits.tolist(), y.tolist(), got.tolist(), strict=True):
        total = sum(math.exp(z) for z in row)
        p = math.exp(row[label]) / total
        rest = sum(math.exp(z) for j, z in enumerate(row) if j != label) / total
        assert value == pytest.approx(math.log(p) - math.log(rest), rel=1e-12, abs=1e-12)
    assert got[1].item() == pytest.approx(math.log(1 / 3) - math.log(2 / 3))


def test_summaries_of_confident_records_are_not_rounded_away():
    """float32 cross-entropy rounds the loss of a margin of 30 to exactly 0; float64 from the
    logits keeps exp(-30), and the float32 loss feature (9e-14 is a normal float32) keeps it."""
    logits = torch.tensor([[30.0, 0.0], [0.0, 30.0], [35.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    assert torch.all(F.cross_entropy(logits, y, reduction="none") == 0)  # the failure mode
    s = prediction_summaries(logits, y)
    np.testing.assert_allclose(s["loss"].numpy(), np.exp([-30.0, -30.0, -35.0]), rtol=1e-9)
    assert len(set(s["loss"].tolist())) == 2  # the two margins of 30 tie, 35 does not
    np.testing.assert_allclose(s["logit_confidence"].numpy(), [30.0, 30.0, 35.0])
    log_p = logits.double().log_softmax(-1)
    np.testing.assert_allclose(
        s["entropy"].numpy(), -(log_p.exp() * log_p).sum(-1).numpy() / math.log(2)
    )
    assert torch.all(s["entropy"] > 0)

    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
        model[1].bias.zero_()
    x = torch.tensor([[30.0, 0.0], [0.0, 35.0]]).reshape(2, 1, 2)
    data = ArrayDataset(x, torch.tensor([0, 1]), num_classes=2)
    spec = FeatureSpec(gradients=(-1,))
    f = features(FeatureExtractor([model], spec, 2, input_shape=(1, 2)), data, np.arange(2))
    np.testing.assert_allclose(f["loss"][:, 0, 0].numpy(), np.exp([-30.0, -35.0]), rtol=1e-6)


def test_class_logits_and_the_logit_output_feature():
    logits = torch.tensor([[2.0, 0.5, -1.0], [30.0, 0.0, -5.0]])
    got = class_logits(logits)
    for i in range(2):
        for j in range(3):
            assert got[i, j].item() == pytest.approx(
                true_class_logit_confidence(logits[i : i + 1], torch.tensor([j])).item(), rel=1e-12
            )
    assert got[1, 0].item() == pytest.approx(30 - math.log(1 + math.exp(-5)), rel=1e-12)
    torch.testing.assert_close(torch.sigmoid(got), logits.double().softmax(-1))
    # the extractor writes it in place of the probabilities
    data = make_data(MNIST, 5)
    model = make_model("fc", MNIST)
    probs = features(FeatureExtractor([model], FeatureSpec(), NUM_CLASSES), data, np.arange(5))
    spec = FeatureSpec(output_scale="logit")
    logit = features(FeatureExtractor([model], spec, NUM_CLASSES), data, np.arange(5))
    torch.testing.assert_close(
        torch.sigmoid(logit["output"]), probs["output"], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="output_scale"):
        FeatureSpec(output_scale="log")


class OneUnsupportedNet(nn.Module):
    """Two Linear layers around a Conv1d, a layer type with no outer-product rule."""

    input_shape = (2, 12)

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(12, 12)
        self.odd = nn.Conv1d(2, 3, 3, padding=1)
        self.last = nn.Linear(36, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x))  # (n, 2, 12): a Linear over a sequence axis
        return self.last(torch.relu(self.odd(h)).flatten(1))


def test_one_unsupported_layer_keeps_outer_products_for_the_others(monkeypatch):
    """Per layer, not all or nothing: the Conv1d alone takes torch.func, and only its
    parameters are differentiated there; the gradients of all three layers, the activations,
    the outputs and the scalar summaries equal those of the all-torch.func extractor."""
    torch.manual_seed(0)
    model = OneUnsupportedNet().double().eval()
    data = make_data(OneUnsupportedNet.input_shape, 6)
    data.x = data.x.double()
    layers = ("first", "odd", "last")
    spec = FeatureSpec(gradients=layers, activations=("first", "odd"))
    mixed = FeatureExtractor([model, model], spec, NUM_CLASSES)
    general = FuncExtractor([model, model], spec, NUM_CLASSES)
    assert mixed.engines == {"first": "outer-product", "odd": "torch.func",
                             "last": "outer-product"}
    assert not mixed.outer_product
    assert set(general.engines.values()) == {"torch.func"}

    func_layers = []
    func_pass = mixed._func_pass

    def spy(t, x, y, grad_layers, act_layers):
        func_layers.append(tuple(grad_layers))
        return func_pass(t, x, y, grad_layers, act_layers)

    monkeypatch.setattr(mixed, "_func_pass", spy)
    got, want = features(mixed, data, range(6)), features(general, data, range(6))
    assert func_layers and set(func_layers) == {("odd",)}
    assert set(got) == set(want)
    for k in want:
        assert_close(got[k], want[k], 1e-10)
    loop = per_example_grads_loop(model, data.x, data.y, layers)
    for n in layers:
        for t in range(2):
            assert_close(got[f"grad:{n}"][:, t], loop[n], 1e-6)  # features are float32
    ours = mixed.scalar_summaries(data, np.arange(6))
    theirs = general.scalar_summaries(data, np.arange(6))
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-9, atol=1e-12)


def test_registering_a_rule_moves_a_layer_type_onto_the_outer_products(monkeypatch):
    from fedattack.features import gradients

    monkeypatch.setitem(gradients.REGISTRY, nn.Conv1d, gradients.OuterProductRule(
        lambda m, inp, g: (g, F.pad(inp, (m.padding[0],) * 2).unfold(2, m.kernel_size[0], 1)
                           .permute(0, 2, 1, 3).flatten(2))))
    torch.manual_seed(0)
    model = OneUnsupportedNet().double().eval()
    data = make_data(OneUnsupportedNet.input_shape, 4)
    data.x = data.x.double()

    class WithConv1d(FeatureExtractor):
        OUTER_PRODUCT_LAYERS = (nn.Linear, nn.Conv2d, nn.Conv1d)

    spec = FeatureSpec(gradients=("odd",), output=False, loss=False, label=False)
    extractor = WithConv1d([model], spec, NUM_CLASSES)
    assert extractor.engines == {"odd": "outer-product"}
    want = per_example_grads_loop(model, data.x, data.y, ("odd",))["odd"]
    assert_close(features(extractor, data, range(4))["grad:odd"][:, 0], want, 1e-6)


def test_extractors_of_one_victim_share_snapshots_and_hash_them_once(monkeypatch, tmp_path):
    from fedattack.features import extractor as extractor_module

    calls = []
    fingerprint = extractor_module._fingerprint
    monkeypatch.setattr(extractor_module, "_fingerprint",
                        lambda snaps: calls.append(1) or fingerprint(snaps))
    snapshots = [make_model("fc", MNIST, seed=s) for s in range(2)]
    data = make_data(MNIST, 5)
    base = FeatureExtractor(snapshots, FeatureSpec(), NUM_CLASSES)
    loss_only = base.with_spec(FeatureSpec(gradients=(), output=False, label=False))
    assert loss_only._snapshots is base._snapshots  # shared, not copied
    assert loss_only.shapes() == {"loss": (2, 1)}
    base.cache(data, np.arange(3), tmp_path / "a")
    base.cache(data, np.arange(2, 5), tmp_path / "b")
    cache = loss_only.cache(data, np.arange(5), tmp_path / "c")
    assert len(calls) == 1
    fresh = FeatureExtractor(snapshots, FeatureSpec(), NUM_CLASSES)
    assert fresh._cache_index(np.arange(5))["snapshots_sha256"] == (
        cache.index["snapshots_sha256"])  # the same hash as before the change
    assert torch.equal(cache.take(np.arange(5))["loss"],
                       features(fresh.with_spec(loss_only.spec), data, range(5))["loss"])


def test_attack_runner_builds_one_extractor_per_victim(monkeypatch, tmp_path):
    """The attacks on a victim ask for extractors of several specs, about 8 times: the
    snapshots are copied (and hashed) by one of them only; a shadow model gets its own."""
    from types import SimpleNamespace

    from fedattack import membership

    built = []

    class Counting(membership.FeatureExtractor):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("_shared") is None)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(membership, "FeatureExtractor", Counting)
    models = [make_model("fc", MNIST, seed=s) for s in range(2)]
    runner = membership.AttackContext(SimpleNamespace(
        observation=SimpleNamespace(models=models), knowledge=SimpleNamespace(victim="v"),
        dataset=make_data(MNIST, 4), settings=AttackConfig(), device="cpu", seed=0,
        log=print, target=None, attacker=None, cache=tmp_path))
    specs = [runner.spec, membership.LOSS_ONLY, FeatureSpec.black_box()]
    for spec in specs * 3:
        ex = runner.extractor(spec)
        assert ex.spec == spec and ex._snapshots is runner.extractor(runner.spec)._snapshots
    assert built.count(True) == 1
    shadow = [make_model("fc", MNIST, seed=9)]
    for spec in specs * 2:
        assert runner.extractor(spec, shadow).spec == spec
    assert built.count(True) == 2
