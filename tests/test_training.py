"""Training loops, schedule, determinism and the weight exchange format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedattack.config import TrainConfig
from fedattack.models import build_model
from fedattack.training import (
    BatchDataset,
    evaluate,
    get_weights,
    lr_at,
    make_optimizer,
    resolve_device,
    set_lr,
    set_torch_threads,
    set_weights,
    train_epoch,
    train_model,
    weight_names,
)
from tests.fakes import ArrayDataset

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


def Blobs(n: int = 240, seed: int = 0) -> ArrayDataset:  # noqa: N802 (reads as the dataset it makes)
    """Four well-separated Gaussian blobs in 8 dimensions; records the batches asked for."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    centres = rng.normal(0, 4, size=(4, 8))
    return ArrayDataset((centres[y] + rng.normal(0, 0.5, size=(n, 8))).astype(np.float32), y,
                        num_classes=4, name="blobs")


class Images:
    """A few random 1x28x28 images, for models with BatchNorm."""

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, 28, 28, generator=g)
        self.y = torch.arange(n) % 10

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.from_numpy(idx)
        return self.x[t], self.y[t]


def fc(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("fc", (8,), 4)


def weights_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_blobs_satisfy_the_protocol():
    assert isinstance(Blobs(8), BatchDataset)
    assert not isinstance(object(), BatchDataset)


# --- schedule and optimizer ------------------------------------------------------------------


def test_lr_at_paper_cifar_schedule():
    cfg = TrainConfig(optimizer="sgd", lr=0.01, lr_milestones=[50, 100], lr_gamma=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.01)
    assert lr_at(cfg, 49) == pytest.approx(0.01)
    assert lr_at(cfg, 50) == pytest.approx(0.001)
    assert lr_at(cfg, 99) == pytest.approx(0.001)
    assert lr_at(cfg, 100) == pytest.approx(0.0001)
    assert lr_at(cfg, 299) == pytest.approx(0.0001)


def test_lr_at_constant_without_milestones_and_rejects_negative_epoch():
    cfg = TrainConfig(lr=0.003)
    assert {lr_at(cfg, e) for e in range(0, 500, 37)} == {0.003}
    with pytest.raises(ValueError):
        lr_at(cfg, -1)


def test_make_optimizer_and_set_lr():
    model = fc()
    adam = make_optimizer(model, TrainConfig(optimizer="adam", lr=0.002, weight_decay=1e-4))
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["lr"] == 0.002 and adam.param_groups[0]["weight_decay"] == 1e-4
    sgd = make_optimizer(
        model, TrainConfig(optimizer="sgd", lr=0.01, momentum=0.5, weight_decay=5e-4)
    )
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.5, 5e-4)
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in model.parameters())
    set_lr(sgd, 0.123)
    assert all(g["lr"] == 0.123 for g in sgd.param_groups)


# --- training ------------------------------------------------------------------------------


def test_train_model_learns_a_separable_problem():
    data = Blobs()
    train_idx, test_idx = np.arange(0, 160), np.arange(160, 240)
    seen = []
    history = train_model(
        fc(),
        data,
        train_idx,
        test_idx,
        TrainConfig(batch_size=16),
        5,
        CPU,
        seed=0,
        on_epoch=seen.append,
    )
    assert seen == history and [r["epoch"] for r in history] == [0, 1, 2, 3, 4]
    assert set(history[0]) == {
        "epoch",
        "lr",
        "train_loss",
        "train_accuracy",
        "test_loss",
        "test_accuracy",
    }
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.95


def test_train_epoch_visits_each_index_once_in_a_seeded_order():
    data = Blobs()
    model = fc()
    opt = make_optimizer(model, TrainConfig())
    idx = np.arange(10, 60)
    stats = train_epoch(model, data, idx, opt, 16, CPU, torch.Generator().manual_seed(3))
    assert [len(c) for c in data.calls] == [16, 16, 16, 2]
    order = np.concatenate(data.calls)
    assert sorted(order) == list(idx) and not np.array_equal(order, idx)
    assert 0 <= stats["accuracy"] <= 1 and stats["loss"] > 0

    again = Blobs()
    train_epoch(fc(), again, idx, opt, 16, CPU, torch.Generator().manual_seed(3))
    assert np.array_equal(np.concatenate(again.calls), order)
    other = Blobs()
    train_epoch(fc(), other, idx, opt, 16, CPU, torch.Generator().manual_seed(4))
    assert not np.array_equal(np.concatenate(other.calls), order)


def test_train_epoch_reports_per_example_means():
    # With a zero learning rate the model does not move, so the epoch's running loss and
    # accuracy must equal evaluate's (a ragged last batch catches a mean of batch means).
    data, model = Blobs(), fc()
    idx = np.arange(50)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = train_epoch(model, data, idx, frozen, 16, CPU, torch.Generator().manual_seed(0))
    reference = evaluate(model, data, idx, CPU)
    assert stats["loss"] == pytest.approx(reference["loss"], rel=1e-5)
    assert stats["accuracy"] == pytest.approx(reference["accuracy"])


def test_train_model_shuffles_each_epoch_differently():
    data = Blobs()
    train_model(fc(), data, np.arange(40), None, TrainConfig(batch_size=40), 2, CPU, seed=0)
    assert len(data.calls) == 2 and sorted(data.calls[0]) == sorted(data.calls[1])
    assert not np.array_equal(data.calls[0], data.calls[1])


def test_train_model_uses_the_schedule_from_start_epoch():
    cfg = TrainConfig(optimizer="sgd", lr=0.1, lr_milestones=[3], lr_gamma=0.5)
    history = train_model(fc(), Blobs(), np.arange(32), None, cfg, 3, CPU, 0, start_epoch=2)
    assert [r["epoch"] for r in history] == [2, 3, 4]
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.05, 0.05])
    assert history[0]["test_loss"] is None and history[0]["test_accuracy"] is None


def _train(seed_init: int, seed_train: int, arch: str = "fc") -> list[np.ndarray]:
    if arch == "fc":
        model, data, idx = fc(seed_init), Blobs(), np.arange(100)
    else:
        torch.manual_seed(seed_init)
        model, data, idx = build_model(arch, (1, 28, 28), 10), Images(), np.arange(16)
    cfg = TrainConfig(batch_size=8)
    train_model(model, data, idx, idx[:8], cfg, 2, CPU, seed=seed_train)
    return get_weights(model)


@pytest.mark.parametrize("arch", ["fc", "resnet20"])
def test_training_is_bit_identical_for_a_seed(arch):
    first = _train(0, 0, arch)
    assert weights_equal(first, _train(0, 0, arch))
    assert not weights_equal(first, _train(0, 1, arch))  # another shuffle
    assert not weights_equal(first, _train(1, 0, arch))  # another initialisation


def test_resumed_training_matches_an_unbroken_run():
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.0, batch_size=16)
    data, idx = Blobs(), np.arange(96)
    whole = fc()
    train_model(whole, data, idx, None, cfg, 4, CPU, seed=7)
    halves = fc()
    train_model(halves, data, idx, None, cfg, 2, CPU, seed=7)
    train_model(halves, data, idx, None, cfg, 2, CPU, seed=7, start_epoch=2)
    assert weights_equal(get_weights(whole), get_weights(halves))


# --- evaluation ------------------------------------------------------------------------------


def test_evaluate_matches_a_direct_computation():
    data, model = Blobs(), fc()
    idx = np.arange(50, 90)
    result = evaluate(model, data, idx, CPU, batch_size=7)
    x, y = torch.from_numpy(data.x[idx]), torch.from_numpy(data.y[idx]).long()
    with torch.no_grad():
        logits = model(x)
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_evaluate_restores_modes_and_leaves_batchnorm_alone():
    torch.manual_seed(0)
    model = build_model("resnet20", (1, 28, 28), 10)
    before = get_weights(model)
    model.train()
    evaluate(model, Images(), np.arange(16), CPU)
    assert model.training
    assert weights_equal(before, get_weights(model))  # eval mode: running stats untouched

    model.eval()
    evaluate(model, Images(), np.arange(16), CPU)
    assert not model.training and not any(m.training for m in model.modules())

    model.train()
    model.layer2.eval()
    evaluate(model, Images(), np.arange(16), CPU)
    assert model.training and model.layer1.training and model.fc.training
    assert not any(m.training for m in model.layer2.modules())


def test_empty_indices_are_refused():
    with pytest.raises(ValueError):
        evaluate(fc(), Blobs(), np.array([], dtype=np.int64), CPU)


# --- weights ---------------------------------------------------------------------------------


def test_weights_round_trip_including_batchnorm_buffers():
    torch.manual_seed(0)
    source = build_model("resnet20", (1, 28, 28), 10)
    train_model(source, Images(), np.arange(16), None, TrainConfig(batch_size=8), 1, CPU, 0)
    weights = get_weights(source)
    names = weight_names(source)
    assert names == list(source.state_dict()) and len(weights) == len(names)
    assert "bn1.running_mean" in names and "bn1.num_batches_tracked" in names

    torch.manual_seed(1)
    target = build_model("resnet20", (1, 28, 28), 10)
    assert not weights_equal(weights, get_weights(target))
    set_weights(target, weights)
    assert weights_equal(weights, get_weights(target))
    x = Images().x[:4]
    torch.testing.assert_close(source.eval()(x), target.eval()(x), rtol=0, atol=0)


def test_get_weights_returns_copies_and_set_weights_casts():
    model = fc()
    weights = get_weights(model)
    weights[0][...] = 0
    assert model.features[0].weight.abs().sum() > 0
    set_weights(model, [w.astype(np.float64) for w in weights])
    assert model.features[0].weight.dtype == torch.float32
    assert model.features[0].weight.abs().sum() == 0


def test_set_weights_mismatch_names_the_key_and_changes_nothing():
    model = fc()
    weights = get_weights(model)
    bad = list(weights)
    bad[2] = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="features.2.weight"):
        set_weights(model, bad)
    assert weights_equal(weights, get_weights(model))
    with pytest.raises(ValueError, match="classifier.bias"):
        set_weights(model, weights[:-1])
    with pytest.raises(ValueError, match="extra"):
        set_weights(model, weights + [np.zeros(1)])


# --- devices and threads ---------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device().type == expected
    with pytest.raises(ValueError):
        resolve_device("tpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_set_torch_threads():
    before = torch.get_num_threads()
    try:
        set_torch_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        set_torch_threads(0)
