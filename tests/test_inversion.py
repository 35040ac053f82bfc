"""The reconstruction attacks' core: the re-enacted local training, label recovery, the matching
objective and the three attacks on small problems (fedattack/inversion)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fedattack.config import TrainConfig
from fedattack.inversion import InversionTarget, LocalRecipe, UpdateMatcher, registry
from fedattack.inversion.labels import (
    class_update,
    count_labels,
    idlg_label,
    recover_labels,
    round_counts,
)
from fedattack.inversion.recipe import local_update
from fedattack.training import make_optimizer, set_lr, train_on_batches
from tests.fakes import ArrayDataset

SHAPE = (1, 8, 8)
CLASSES = 6


class TinyNet(nn.Module):
    """A conv layer and two linear ones: small enough for exact checks, ReLU like the CNN."""

    def __init__(self, activation=nn.ReLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = activation()
        self.hidden = nn.Linear(4 * 8 * 8, 16)
        self.out = nn.Linear(16, CLASSES)

    def forward(self, x):
        return self.out(self.act(self.hidden(self.act(self.conv(x)).flatten(1))))


def records(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *SHAPE), generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def trained(model: nn.Module, x, y, recipe: LocalRecipe) -> dict:
    """The upload of `model` trained by the project's own loop (fedattack.training) on x, y in
    the recipe's fixed batch order."""
    cfg = TrainConfig(optimizer=recipe.optimizer, lr=recipe.lr, momentum=recipe.momentum,
                      weight_decay=recipe.weight_decay, batch_size=recipe.batch_size)
    optimizer = make_optimizer(model, cfg)
    set_lr(optimizer, recipe.lr)
    data = ArrayDataset(x.numpy(), y.numpy(), CLASSES)
    batches = [np.arange(len(y))[b] for _ in range(recipe.epochs) for b in recipe.batches]
    train_on_batches(model, data, batches, optimizer, torch.device("cpu"))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def target_of(x, y, recipe: LocalRecipe, seed: int = 0, model=None) -> InversionTarget:
    torch.manual_seed(seed)
    model = model or TinyNet()
    broadcast = {k: v.detach().clone() for k, v in model.state_dict().items()}
    upload = trained(model, x, y, recipe)
    return InversionTarget(model, broadcast, upload, recipe, SHAPE, CLASSES,
                           torch.zeros(1), torch.ones(1))


RECIPES = [
    LocalRecipe(num_records=4, batch_size=8, lr=0.1),  # FedSGD
    LocalRecipe(num_records=5, batch_size=2, epochs=2, lr=0.05, momentum=0.9,
                weight_decay=1e-3),
    LocalRecipe(num_records=4, batch_size=3, epochs=2, lr=0.01, optimizer="adam",
                weight_decay=1e-3),
]


@pytest.mark.parametrize("recipe", RECIPES, ids=["fedsgd", "sgd-momentum", "adam"])
def test_local_update_reenacts_the_participants_training(recipe):
    x, y = records(recipe.num_records)
    target = target_of(x, y, recipe)
    model = TinyNet()
    start = {k: torch.as_tensor(v) for k, v in target.broadcast.items()}
    update = local_update(model, start, {}, x, F.one_hot(y, CLASSES).float(), recipe)
    for name, delta in update.items():
        observed = target.upload[name] - target.broadcast[name]
        torch.testing.assert_close(delta, observed, rtol=1e-4, atol=1e-6)


def test_matcher_scores_the_true_records_zero_and_restarts_independently():
    recipe = RECIPES[1]
    x, y = records(recipe.num_records)
    matcher = UpdateMatcher(target_of(x, y, recipe))
    soft = F.one_hot(y, CLASSES).float()
    noise = torch.rand((2, *x.shape), generator=torch.Generator().manual_seed(1))
    batch = torch.stack([x, noise[0], noise[1]])
    together = [matcher.distances(batch, soft, metric) for metric in ("cosine", "l2")]
    alone = [torch.cat([matcher.distances(batch[i : i + 1], soft, metric) for i in range(3)])
             for metric in ("cosine", "l2")]
    for batched, single in zip(together, alone, strict=True):
        assert batched[0] < 1e-5
        assert (batched[1:] > 1e-2).all()
        torch.testing.assert_close(batched, single)


def test_matcher_under_secure_aggregation_averages_the_participants():
    recipe = LocalRecipe(num_records=3, batch_size=2, lr=0.1)
    (xa, ya), (xb, yb) = records(3, seed=1), records(2, seed=2)
    torch.manual_seed(0)
    model = TinyNet()
    broadcast = {k: v.detach().clone() for k, v in model.state_dict().items()}
    uploads = []
    for x, y, n in ((xa, ya, 3), (xb, yb, 2)):
        model.load_state_dict(broadcast)
        uploads.append(trained(model, x, y, LocalRecipe(n, 2, lr=0.1)))
    average = {k: (3 * uploads[0][k] + 2 * uploads[1][k]) / 5 for k in broadcast}
    target = InversionTarget(model, broadcast, average, recipe, SHAPE, CLASSES, torch.zeros(1),
                             torch.ones(1), shares=(3, 2))
    matcher = UpdateMatcher(target)
    x, y = torch.cat([xa, xb]), torch.cat([ya, yb])
    assert target.num_records == 5
    assert matcher.distances(x[None], F.one_hot(y, CLASSES).float(), "l2").item() < 1e-6
    swapped = torch.cat([xb, xa])[None]  # the records of the wrong participants
    assert matcher.distances(swapped, F.one_hot(y, CLASSES).float(), "l2").item() > 1e-3


def test_idlg_label_from_a_hand_built_gradient():
    """Softmax + cross-entropy: the bias gradient is p - onehot(y); SGD and Adam move the
    true label's bias up, every other one down."""
    p = torch.tensor([0.1, 0.3, 0.05, 0.25, 0.2, 0.1])
    for label in range(CLASSES):
        gradient = p - F.one_hot(torch.tensor(label), CLASSES)
        assert idlg_label(-0.01 * gradient) == label  # one SGD step
        assert idlg_label(-0.001 * torch.sign(gradient)) == label  # one Adam step


@pytest.mark.parametrize("bias", [True, False])
def test_idlg_label_of_a_real_update(bias):
    for label in range(CLASSES):
        x, _ = records(1, seed=label)
        model = TinyNet()
        model.out = nn.Linear(16, CLASSES, bias=bias)
        target = target_of(x, torch.tensor([label]), RECIPES[0], model=model)
        assert idlg_label(class_update(target.model, target.broadcast, target.upload)) == label


def test_batch_labels_are_counted_from_the_update():
    y = torch.tensor([0, 0, 1, 3, 3, 3, 5, 2])
    x, _ = records(len(y), seed=3)
    for recipe in (LocalRecipe(8, 8, lr=0.1), LocalRecipe(8, 4, epochs=2, lr=0.05,
                                                         momentum=0.5)):
        target = target_of(x, y, recipe)
        counts = count_labels(target, torch.Generator().manual_seed(0))
        np.testing.assert_array_equal(counts, np.bincount(y.numpy(), minlength=CLASSES))
        labels, method = recover_labels(target, torch.Generator().manual_seed(0))
        assert method == "count" and sorted(labels.tolist()) == sorted(y.tolist())


def test_round_counts_sum_to_the_records():
    assert round_counts(np.array([1.4, 2.6, -0.5, 0.2]), 4).tolist() == [1, 3, 0, 0]
    assert round_counts(np.array([0.0, 0.0]), 3).sum() == 3
    assert round_counts(np.array([np.nan, 5.0]), 2).tolist() == [0, 2]


def tiny_smooth_target(n: int) -> tuple[InversionTarget, torch.Tensor]:
    """A sigmoid net on 8x8 records: where DLG is known to succeed."""
    x, y = records(n, seed=5)
    torch.manual_seed(0)
    model = TinyNet(activation=nn.Sigmoid)
    return target_of(x, y, LocalRecipe(n, n, lr=0.1), model=model), x


@pytest.mark.parametrize("name", ["dlg", "idlg", "inverting-gradients"])
def test_each_attack_reconstructs_a_tiny_record(name):
    target, x = tiny_smooth_target(1)
    attack = registry.get(name)
    params = {"iterations": 100} if name != "inverting-gradients" else {
        "iterations": 60, "restarts": 2, "tv": 0.0}
    rec = attack.run(target, attack.parameters(params))
    assert rec.x.shape == x.shape and rec.labels.shape == (1,)
    noise_error = (torch.rand_like(x) - x).pow(2).mean()
    assert (rec.x.clamp(0, 1) - x).pow(2).mean() < noise_error / 20
    assert rec.iterations <= params["iterations"] and rec.loss == min(rec.restart_losses)


def test_inverting_gradients_keeps_the_restart_of_lowest_loss():
    target, _ = tiny_smooth_target(2)
    attack = registry.get("inverting-gradients")
    rec = attack.run(target, attack.parameters({"iterations": 20, "restarts": 3}))
    assert len(rec.restart_losses) == 3 and rec.loss == min(rec.restart_losses)
    assert rec.x.min() >= 0 and rec.x.max() <= 1  # kept in the pixel range


def test_unknown_attack_and_parameters_are_refused():
    with pytest.raises(ValueError, match="did you mean 'idlg'"):
        registry.get("idlgg")
    with pytest.raises(ValueError, match="restart"):
        registry.get("inverting-gradients").parameters({"restart": 2})
