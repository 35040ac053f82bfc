"""Attack models on synthetic feature batches that follow the ``fedattack/features/`` contract.

Per-record shapes: ``grad:<layer>`` (T, rows, cols), ``act:<layer>`` (T, d), ``output`` (T, C),
``loss`` (T, 1), ``label`` (C,). Networks are kept small (8 kernels, a few epochs).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from fedattack.attacks import (
    AttackNetwork,
    TensorSource,
    ThresholdAttack,
    UnsupervisedAttack,
    WhiteBoxAttack,
)
from fedattack.attacks.network import gradient_component_parameters
from fedattack.attacks.threshold import SUMMARY, best_threshold, threshold_scores
from fedattack.attacks.unsupervised import cluster_members, summary_column
from fedattack.attacks.whitebox import (
    auc,
    balanced_accuracy,
    balanced_batches,
    class_balance_weights,
    standardisation,
)

CLASSES = 4
ROWS, COLS = 6, 5  # a gradient matrix: 6 output units, 4 inputs + a bias column

pytestmark = pytest.mark.usefixtures("one_thread")


def shapes_for(snapshots: int) -> dict[str, tuple[int, ...]]:
    return {
        "grad:fc.1": (snapshots, ROWS, COLS),
        "grad:fc.2": (snapshots, CLASSES, ROWS + 1),
        "act:fc.1": (snapshots, ROWS),
        "output": (snapshots, CLASSES),
        "loss": (snapshots, 1),
        "label": (CLASSES,),
    }


def random_batch(shapes: dict[str, tuple[int, ...]], size: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(size, *shape, generator=generator) for name, shape in shapes.items()}


def features(scale: torch.Tensor, seed: int, snapshots: int = 2) -> dict[str, torch.Tensor]:
    """Records whose gradients and losses grow with ``scale`` (one value per record)."""
    n = len(scale)
    generator = torch.Generator().manual_seed(seed)
    grad = torch.randn(n, snapshots, ROWS, COLS, generator=generator) * scale[:, None, None, None]
    loss = torch.rand(n, snapshots, 1, generator=generator) * scale[:, None, None]
    logits = torch.randn(n, snapshots, CLASSES, generator=generator)
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    return {
        "grad:fc.1": grad,
        "loss": loss,
        "output": torch.softmax(logits, dim=-1),
        "label": nn.functional.one_hot(labels, CLASSES).float(),
    }


def side(n: int, member: bool, seed: int, components=None) -> TensorSource:
    """Members have gradients and losses five times smaller than non-members."""
    tensors = features(torch.full((n,), 0.2 if member else 1.0), seed)
    return TensorSource({k: tensors[k] for k in components or tensors})


def summaries_of(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The per-record summaries the unsupervised attack reconstructs, each (N, T)."""
    output, label = tensors["output"], tensors["label"]
    true_class = label.argmax(dim=1)[:, None].expand(-1, output.shape[1])
    return {
        "loss": tensors["loss"][..., 0].numpy(),
        "correct": (output.argmax(dim=2) == true_class).float().numpy(),
        "confidence": output.gather(2, true_class[..., None])[..., 0].numpy(),
        "entropy": -(output * output.log()).sum(dim=2).numpy(),
        "grad_norm": tensors["grad:fc.1"].flatten(2).norm(dim=2).numpy(),
    }


def mixture(n: int, seed: int):
    """Alternating members (small gradients) and non-members: source, summaries, truth."""
    truth = (np.arange(n) % 2 == 0).astype(np.int64)
    tensors = features(torch.where(torch.as_tensor(truth) == 1, 0.2, 1.0), seed)
    return TensorSource(tensors), summaries_of(tensors), truth


# --- the network -------------------------------------------------------------------------------


@pytest.mark.parametrize("snapshots", [1, 2, 5])
@pytest.mark.parametrize(
    "components",
    [("loss",), ("output", "label"), ("grad:fc.1",), tuple(shapes_for(1))],
)
def test_network_output_shapes(snapshots, components):
    shapes = {name: shapes_for(snapshots)[name] for name in components}
    network = AttackNetwork(shapes, kernels=8, decoder_outputs=5).eval()
    batch = random_batch(shapes, size=7)
    assert network(batch).shape == (7,)
    assert network.embed(batch).shape == (7,)
    assert network.decode(batch).shape == (7, 5)
    assert torch.equal(network(batch), network.embed(batch))


def test_network_reads_only_its_components():
    shapes = shapes_for(2)
    network = AttackNetwork({"loss": shapes["loss"]}, kernels=8).eval()
    batch = random_batch(shapes, size=5)
    other = dict(batch, output=torch.rand(5, *shapes["output"]))
    assert torch.equal(network(batch), network(other))
    with pytest.raises(KeyError, match="loss"):
        network({"output": batch["output"]})
    with pytest.raises(ValueError, match="per-record shape"):
        network({"loss": torch.rand(5, 3, 1)})


def test_network_without_decoder_cannot_decode():
    network = AttackNetwork({"loss": (1, 1)})
    with pytest.raises(RuntimeError, match="decoder"):
        network.decode({"loss": torch.rand(2, 1, 1)})


def test_init_is_normal_001_with_zero_biases():
    network = AttackNetwork(shapes_for(2), kernels=64, decoder_outputs=5, init="paper")
    layers = [m for m in network.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    # 6 components x (2 FC, + 1 conv for the 2 gradient ones), 4 encoder and 2 decoder layers
    assert len(layers) == 6 * 2 + 2 + 4 + 2
    weights = torch.cat([m.weight.detach().flatten() for m in layers])
    assert abs(weights.std().item() - 0.01) < 0.0005
    assert abs(weights.mean().item()) < 0.0005
    for layer in layers:
        if layer.weight.numel() >= 2000:
            assert abs(layer.weight.std().item() - 0.01) < 0.001
        assert torch.count_nonzero(layer.bias) == 0


def test_paper_init_starts_at_a_tied_plateau_and_the_default_does_not():
    """N(0, 0.01) shrinks the signal about tenfold per layer: the initial logits of unit-scale
    inputs are within 1e-5 of 0 (their float32 sigmoids tie at 0.5); PyTorch's default keeps
    them apart."""
    shapes = shapes_for(2)
    batch = random_batch(shapes, size=200)
    torch.manual_seed(0)
    paper = AttackNetwork(shapes, kernels=8, init="paper").eval()(batch).detach()
    torch.manual_seed(0)
    default = AttackNetwork(shapes, kernels=8).eval()(batch).detach()
    assert paper.abs().max() < 1e-5
    assert len(torch.sigmoid(paper).unique()) < 20
    assert default.std() > 1e-3
    assert len(torch.sigmoid(default).unique()) == 200
    with pytest.raises(ValueError, match="init"):
        AttackNetwork(shapes, init="xavier")


def test_network_standardises_its_inputs():
    shapes = {"loss": (2, 1), "label": (CLASSES,)}
    network = AttackNetwork(shapes, kernels=8).eval()
    batch = random_batch(shapes, size=5)
    shift = {k: torch.full(v, 3.0) for k, v in shapes.items()}
    scale = {k: torch.full(v, 2.0) for k, v in shapes.items()}
    moved = {k: v * 2.0 + 3.0 for k, v in batch.items()}
    before = network(batch)
    network.set_standardisation({k: (shift[k], scale[k]) for k in shapes})
    torch.testing.assert_close(network(moved), before)
    with pytest.raises(ValueError, match="positive"):
        network.set_standardisation({k: (shift[k], 0 * scale[k]) for k in shapes})
    with pytest.raises(ValueError, match="standardisation for"):
        network.set_standardisation({"loss": (shift["loss"], scale["loss"])})


def test_gradient_kernel_spans_a_whole_row():
    snapshots, kernels = 3, 8
    shapes = {"grad:fc.1": (snapshots, ROWS, COLS)}
    network = AttackNetwork(shapes, kernels=kernels).eval()
    component = network.components[0]
    conv = component[0]
    assert isinstance(conv, nn.Conv2d)
    assert (conv.in_channels, conv.out_channels) == (snapshots, kernels)
    assert conv.kernel_size == (1, COLS) and conv.stride == (1, 1)

    x = torch.randn(1, snapshots, ROWS, COLS)
    y = conv(x)
    assert y.shape == (1, kernels, ROWS, 1)  # one output per row and kernel
    row = 2
    changed = x.clone()
    changed[0, -1, row, -1] += 1.0  # last snapshot, last column (the bias) of one row
    difference = (conv(changed) - y).abs()[0, :, :, 0]  # (kernels, rows)
    assert torch.all(difference[:, row] > 0)  # every kernel sees the whole row ...
    assert torch.all(difference[:, [r for r in range(ROWS) if r != row]] == 0)  # ... and only it

    actual = sum(p.numel() for p in component.parameters())
    assert gradient_component_parameters(shapes["grad:fc.1"], kernels) == actual


def test_gradient_component_needs_a_matrix_per_snapshot():
    with pytest.raises(ValueError, match="rows, cols"):
        AttackNetwork({"grad:fc.1": (2, 30)})


# --- the supervised white-box attack -----------------------------------------------------------


def test_balanced_batches_see_the_larger_side_once():
    rng = np.random.default_rng(0)
    members, nonmembers = np.arange(100), np.arange(1000, 1030)
    steps = list(balanced_batches(members, nonmembers, half=8, rng=rng))
    assert len(steps) == math.ceil(100 / 8)
    assert all(len(m) == 8 and len(n) == 8 for m, n in steps)
    seen_members = np.concatenate([m for m, _ in steps])
    assert sorted(seen_members[:100]) == list(members)  # every member once, then a few again
    seen_nonmembers = np.concatenate([n for _, n in steps])
    assert set(seen_nonmembers) == set(nonmembers)
    counts = np.unique(seen_nonmembers, return_counts=True)[1]
    assert counts.min() >= 3 and counts.max() <= 4  # 104 draws over 30 records, evenly


class RecordingSource(TensorSource):
    def __init__(self, tensors):
        super().__init__(tensors)
        self.taken: list[np.ndarray] = []

    def take(self, rows):
        self.taken.append(np.asarray(rows))
        return super().take(rows)


def test_fit_trains_on_balanced_batches():
    members = RecordingSource(side(50, True, seed=1).tensors)
    nonmembers = RecordingSource(side(20, False, seed=2).tensors)
    # no standardisation: its pass over the training records would be recorded too
    WhiteBoxAttack(
        epochs=2, batch_size=16, kernels=8, validation_fraction=0, standardise="none"
    ).fit(members, nonmembers)
    steps = 2 * math.ceil(50 / 8)
    assert [len(rows) for rows in members.taken] == [8] * steps
    assert [len(rows) for rows in nonmembers.taken] == [8] * steps
    first_epoch = np.concatenate(members.taken[: steps // 2])
    assert set(first_epoch) == set(range(50))


@pytest.mark.parametrize("components", [None, ["grad:fc.1", "label"]])
def test_whitebox_separates_members(components):
    attack = WhiteBoxAttack(epochs=12, lr=1e-3, kernels=8).fit(
        side(300, True, seed=1, components=components),
        side(300, False, seed=2, components=components),
    )
    scores = np.concatenate(
        [
            attack.predict_proba(side(200, True, seed=3, components=components)),
            attack.predict_proba(side(200, False, seed=4, components=components)),
        ]
    )
    assert scores.shape == (400,) and np.all((scores >= 0) & (scores <= 1))
    assert roc_auc_score(np.repeat([1, 0], 200), scores) > 0.9
    assert max(h["val_accuracy"] for h in attack.history_) > 0.9


def noise_attack(**kwargs) -> tuple[WhiteBoxAttack, TensorSource, TensorSource]:
    """An attack on records whose membership leaves no trace: validation accuracy wanders."""
    members = TensorSource(features(torch.ones(120), seed=5))
    nonmembers = TensorSource(features(torch.ones(120), seed=6))
    attack = WhiteBoxAttack(kernels=8, lr=3e-3, **kwargs).fit(members, nonmembers)
    return attack, members, nonmembers


def test_best_epoch_is_restored():
    reported = []
    attack, members, nonmembers = noise_attack(epochs=8, on_epoch=reported.append)
    assert reported == attack.history_
    assert set(attack.history_[0]) == {
        "epoch", "train_loss", "train_auc", "val_loss", "val_auc", "val_accuracy"
    }
    aucs = [h["val_auc"] for h in attack.history_]
    assert len(aucs) == 8
    assert attack.best_epoch_ == int(np.argmax(aucs)) + 1
    best = aucs[attack.best_epoch_ - 1]
    assert attack.val_auc_ == best
    assert aucs[-1] != best  # otherwise this test could not tell a restore from none

    member_rows, nonmember_rows = attack.validation_rows_
    assert (len(member_rows), len(nonmember_rows)) == (24, 24)
    restored = auc(
        attack.decision_function(TensorSource(members.take(member_rows))),
        attack.decision_function(TensorSource(nonmembers.take(nonmember_rows))),
    )
    assert restored == best


def test_patience_stops_training():
    attack, _, _ = noise_attack(epochs=30, patience=2)
    assert len(attack.history_) == attack.best_epoch_ + 2 < 30


def test_trained_scores_are_float64_logits_without_ties():
    attack = WhiteBoxAttack(epochs=5, lr=1e-3, kernels=8).fit(
        side(200, True, seed=1), side(200, False, seed=2)
    )
    targets = TensorSource(
        {k: torch.cat([side(500, True, seed=3).tensors[k], side(500, False, seed=4).tensors[k]])
         for k in side(1, True, seed=0).tensors}
    )
    scores = attack.decision_function(targets)
    assert scores.dtype == np.float64 and scores.shape == (1000,)
    assert len(np.unique(scores)) >= 950
    np.testing.assert_allclose(attack.predict_proba(targets), 1 / (1 + np.exp(-scores)))
    assert np.array_equal(attack.predict(targets), (scores >= 0).astype(np.int64))


def test_separable_features_reach_auc_095_within_the_epoch_bound():
    attack = WhiteBoxAttack(epochs=20, patience=5, kernels=8).fit(  # the default lr, 1e-4
        side(400, True, seed=1), side(400, False, seed=2)
    )
    assert len(attack.history_) <= 20
    scores = [attack.decision_function(side(300, member, seed=s)) for member, s in ((1, 3), (0, 4))]
    assert auc(*scores) > 0.95
    assert attack.val_auc_ > 0.95


def test_undertrained_when_the_features_are_noise_but_the_loss_separates():
    rng = np.random.default_rng(0)
    members, nonmembers = (TensorSource(features(torch.ones(150), seed=s)) for s in (5, 6))
    separating_loss = (-rng.uniform(0, 1, 150), -rng.uniform(2, 3, 150))
    attack = WhiteBoxAttack(epochs=6, patience=3, kernels=8).fit(
        members, nonmembers, reference=separating_loss
    )
    assert attack.reference_val_auc_ == 1.0
    assert attack.val_auc_ < 0.8 and attack.undertrained_ is True
    # the same attack on separable features, against a reference that is noise, learnt
    noise = (rng.normal(size=300), rng.normal(size=300))
    learnt = WhiteBoxAttack(epochs=10, patience=3, kernels=8).fit(
        side(300, True, seed=1), side(300, False, seed=2), reference=noise
    )
    assert learnt.val_auc_ > learnt.reference_val_auc_ and learnt.undertrained_ is False
    with pytest.raises(ValueError, match="reference scores"):
        WhiteBoxAttack(epochs=1, kernels=8).fit(members, nonmembers, reference=noise)


@pytest.mark.parametrize("per", ["component", "coordinate"])
def test_standardisation_is_that_of_the_given_rows(per):
    source = TensorSource(features(torch.linspace(0.1, 3.0, 50), seed=7))
    rows = np.arange(3, 50, 2)
    stats = standardisation([(source, rows[:10]), (source, rows[10:])], batch_size=4, per=per)
    for name, x in source.take(rows).items():
        x = x.double()
        shift, scale = stats[name]
        if per == "component":
            want_shift = torch.full(x.shape[1:], x.mean().item(), dtype=torch.float64)
            want_scale = torch.full(x.shape[1:], x.std(unbiased=False).item(), dtype=torch.float64)
        else:
            want_shift, want_scale = x.mean(0), x.std(0, unbiased=False)
            want_scale = torch.where(want_scale > 0, want_scale, torch.ones_like(want_scale))
        torch.testing.assert_close(shift.double(), want_shift, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scale.double(), want_scale, rtol=1e-5, atol=1e-6)


def test_class_balance_weights_equalise_the_class_distributions():
    members = np.array([0, 0, 0, 1, 2, 2])
    nonmembers = np.array([0, 1, 1, 1, 3])
    w_m, w_n = class_balance_weights(members, nonmembers)
    for c in range(4):
        assert w_m[members == c].sum() == pytest.approx(w_n[nonmembers == c].sum())
    assert np.all(w_m[members == 2] == 0) and np.all(w_n[nonmembers == 3] == 0)
    # a label-only network learns no class prior when balanced: its validation AUC is chance
    labels = torch.as_tensor(np.r_[members, nonmembers])
    one_hot = nn.functional.one_hot(labels, 4).float()
    rows = np.arange(len(labels))
    draws = balanced_batches(rows[:6], rows[6:], 500, np.random.default_rng(0), (w_m, w_n))
    m, n = next(draws)
    assert abs(one_hot[m].mean(0) - one_hot[n].mean(0)).max() < 0.08


def test_same_seed_same_scores():
    def scores(seed):
        attack = WhiteBoxAttack(epochs=3, lr=1e-3, kernels=8, seed=seed)
        attack.fit(side(80, True, seed=1), side(60, False, seed=2))
        return attack.predict_proba(side(50, True, seed=3))

    torch.manual_seed(123)  # the caller's RNG state must not matter ...
    first = scores(0)
    after_fit = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_fit)  # ... nor be changed by a fit ...
    torch.manual_seed(456)
    assert np.array_equal(first, scores(0))
    assert not np.array_equal(first, scores(1))  # ... but the seed must


def test_scores_follow_source_order():
    attack = WhiteBoxAttack(epochs=2, lr=1e-3, kernels=8).fit(
        side(60, True, seed=1), side(60, False, seed=2)
    )
    source = side(70, True, seed=3)
    order = np.random.default_rng(0).permutation(70)
    shuffled = TensorSource(source.take(order))
    np.testing.assert_allclose(attack.predict_proba(shuffled), attack.predict_proba(source)[order])


# --- the unsupervised attack -------------------------------------------------------------------


@pytest.fixture(scope="module")
def unsupervised_attack():
    source, summaries, _ = mixture(300, seed=1)
    return UnsupervisedAttack(epochs=40, lr=1e-3, kernels=8).fit(source, summaries)


def test_unsupervised_training_reconstructs(unsupervised_attack):
    history = unsupervised_attack.history_
    assert len(history) == 40
    assert history[-1]["train_loss"] < 0.75 * history[0]["train_loss"]


def test_unsupervised_calls_the_low_gradient_cluster_members(unsupervised_attack):
    source, summaries, truth = mixture(200, seed=2)
    labels = unsupervised_attack.predict(source, summaries)
    assert np.mean(labels == truth) > 0.9
    assert roc_auc_score(truth, unsupervised_attack.predict_proba(source, summaries)) > 0.9
    assert unsupervised_attack.embed(source).shape == (200,)


def test_unsupervised_labels_follow_the_gradient_norm(unsupervised_attack):
    source, summaries, _ = mixture(200, seed=2)
    flipped = dict(summaries, grad_norm=-summaries["grad_norm"])  # the other cluster is smaller
    labels = unsupervised_attack.predict(source, summaries)
    assert np.array_equal(unsupervised_attack.predict(source, flipped), 1 - labels)
    np.testing.assert_array_equal(
        unsupervised_attack.predict_proba(source, flipped),
        -unsupervised_attack.predict_proba(source, summaries),
    )


def test_unsupervised_same_seed_same_embedding():
    source, summaries, _ = mixture(40, seed=3)

    def embedding(seed):
        attack = UnsupervisedAttack(epochs=2, lr=1e-3, batch_size=8, kernels=8, seed=seed)
        return attack.fit(source, summaries).embed(source)

    first = embedding(0)
    assert np.array_equal(first, embedding(0))
    assert not np.array_equal(first, embedding(1))


def test_cluster_members_subsamples_and_orients(monkeypatch):
    rng = np.random.default_rng(0)
    truth = np.repeat([1, 0], 250)
    embeddings = np.where(truth == 1, 10.0, 0.0) + rng.normal(size=500)
    grad_norm = np.where(truth == 1, 0.1, 2.0) + rng.uniform(size=500)

    import sklearn.cluster  # cluster_members imports it when called

    clustered = []
    real = sklearn.cluster.SpectralClustering

    class Recording(real):
        def fit_predict(self, X, y=None):
            clustered.append(len(X))
            return super().fit_predict(X)

    monkeypatch.setattr(sklearn.cluster, "SpectralClustering", Recording)
    labels = cluster_members(embeddings, grad_norm, seed=0, sample=60)
    assert clustered == [60]
    assert np.array_equal(labels, truth)
    assert np.array_equal(cluster_members(embeddings, -grad_norm, seed=0, sample=60), 1 - truth)


def test_cluster_members_are_not_a_handful_of_outliers():
    """Overlapping member and non-member embeddings plus a few far outliers (as a briefly trained
    encoder gives): the clusters split the bulk, they do not cut the outliers off."""
    rng = np.random.default_rng(1)
    truth = np.repeat([1, 0], 500)
    embeddings = np.where(truth == 1, 1.0, -1.0) + rng.normal(scale=0.8, size=1000)
    embeddings[rng.choice(np.flatnonzero(truth == 0), 15, replace=False)] -= 40 + rng.exponential(
        10, size=15
    )
    grad_norm = np.where(truth == 1, 0.5, 1.0) + rng.uniform(size=1000)
    labels = cluster_members(embeddings, grad_norm, seed=0)
    assert 0.35 < labels.mean() < 0.65
    assert np.mean(labels == truth) > 0.75


def test_summaries_over_snapshots_are_averaged():
    summaries = {"loss": np.array([[1.0, 3.0], [2.0, 2.0]]), "correct": np.array([1.0, 0.0])}
    np.testing.assert_array_equal(summary_column(summaries, "loss", 2), [2.0, 2.0])
    np.testing.assert_array_equal(summary_column(summaries, "correct", 2), [1.0, 0.0])
    with pytest.raises(KeyError, match="grad_norm"):
        summary_column(summaries, "grad_norm", 2)
    with pytest.raises(ValueError, match="shape"):
        summary_column(summaries, "loss", 3)


# --- threshold baselines -----------------------------------------------------------------------


def test_threshold_scores_are_oriented_and_use_the_last_snapshot():
    summaries = {
        "loss": np.array([[5.0, 0.1], [0.0, 2.0]]),
        "confidence": np.array([0.9, 0.2]),
        "entropy": np.array([[0.0, 0.3], [0.0, 1.2]]),
        "logit_confidence": np.array([[1.0, 40.0], [0.0, -3.0]]),
    }
    np.testing.assert_array_equal(threshold_scores(summaries, "loss"), [-0.1, -2.0])
    np.testing.assert_array_equal(threshold_scores(summaries, "logit-confidence"), [40.0, -3.0])
    np.testing.assert_array_equal(threshold_scores(summaries, "confidence"), [0.9, 0.2])
    np.testing.assert_array_equal(threshold_scores(summaries, "entropy"), [-0.3, -1.2])
    with pytest.raises(ValueError, match="unknown"):
        threshold_scores(summaries, "margin")


def test_threshold_attack_on_separable_losses():
    attack = ThresholdAttack("loss").fit(
        {"loss": np.array([0.1, 0.2, 0.3])}, {"loss": np.array([1.0, 2.0, 3.0])}
    )
    assert attack.threshold_ == pytest.approx(-0.65)  # midway between losses 0.3 and 1.0
    np.testing.assert_array_equal(attack.predict({"loss": np.array([0.5, 0.8, 0.2])}), [1, 0, 1])
    assert attack.score({"loss": np.array([0.1])}, {"loss": np.array([5.0])}) == 1.0


@pytest.mark.parametrize(
    "kind,member,nonmember",
    [("confidence", 0.9, 0.4), ("entropy", 0.1, 0.8), ("logit-confidence", 2.0, -0.4)],
)
def test_threshold_attack_orientation(kind, member, nonmember):
    rng = np.random.default_rng(0)
    members = {SUMMARY[kind]: member + 0.05 * rng.normal(size=50)}
    nonmembers = {SUMMARY[kind]: nonmember + 0.05 * rng.normal(size=50)}
    attack = ThresholdAttack(kind).fit(members, nonmembers)
    assert attack.predict(members).mean() > 0.95
    assert attack.predict(nonmembers).mean() < 0.05


@pytest.mark.parametrize("seed", range(10))
def test_best_threshold_beats_every_other_threshold(seed):
    rng = np.random.default_rng(seed)
    members = rng.integers(0, 8, size=int(rng.integers(1, 30))).astype(float) + 1.0
    nonmembers = rng.integers(0, 8, size=int(rng.integers(1, 30))).astype(float)

    def accuracy(t):
        return balanced_accuracy((members >= t).astype(float), (nonmembers >= t).astype(float))

    grid = np.arange(-1.0, 10.0, 0.25)
    assert accuracy(best_threshold(members, nonmembers)) == max(accuracy(t) for t in grid)
