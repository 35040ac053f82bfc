"""The GAN attack of Hitaj et al.: config, by-class splits, generator, attacker role, and the
measure (noise, blank images and an untrained generator fail it; real victim digits pass)."""

import numpy as np
import pytest
import torch
from flwr.common import RecordDict

from clients.gan_attacker import OPTIMIZER_STATE, GanAttacker
from clients.honest import HonestClient
from clients.round import RoundContext
from fedattack import protocol
from fedattack.config import ConfigError, Experiment, GanConfig, parse_experiment
from fedattack.data import make_splits
from fedattack.data.registry import Dataset
from fedattack.experiment import (
    SNAPSHOT_DIR,
    check_against_dataset,
    experiment_dataset,
    experiment_splits,
    initial_model,
)
from fedattack.gan import (
    WithGenerated,
    build_generator,
    freeze,
    generate,
    generator_optimizer,
    load_optimizer_tensors,
    optimizer_tensors,
    train_generator,
)
from fedattack.reconstruction import (
    SUCCESS_FIGURE,
    SUCCESS_SHARE,
    Eigenfaces,
    GanMeasure,
    build_measure,
    check_records,
    classifier_split,
    mmd2,
    none_images,
    normalise,
    penultimate,
    plot_success,
    window_success,
    window_text,
)
from fedattack.snapshots import GENERATED_KIND, SnapshotStore, local_view
from fedattack.training import get_weights

VICTIM_CLASS = 3
SPLIT = {"partition": "by-class", "classes": {0: [0, 1, 2, 3, 4], 1: [5, 6, 7, 8, 9]}}
SMALL_KNOWLEDGE = {"train_members": 50, "train_nonmembers": 50, "test_members": 50,
                   "test_nonmembers": 50}


def gan_experiment(**gan) -> Experiment:
    return Experiment(
        name="gan-unit",
        data={"dataset": "mnist", "train_size": 200, "nonmember_size": 500,
              "knowledge": SMALL_KNOWLEDGE, **SPLIT},
        model={"arch": "cnn-gan"},
        federation={"num_participants": 2, "rounds": 3},
        gan={"attacker": 1, "victim_class": VICTIM_CLASS, "generator_steps": 5,
             "samples_per_round": 32, "eval_samples": 8, "base_channels": 16, **gan},
    )


def fit_config(exp: Experiment, server_round: int) -> dict:
    return {protocol.SERVER_ROUND: server_round, protocol.LR: exp.training.lr,
            protocol.EXPERIMENT: exp.model_dump_json()}


def global_weights(exp: Experiment) -> list[np.ndarray]:
    return get_weights(initial_model(exp, experiment_dataset(exp)))


# -- config ----------------------------------------------------------------------------------


def test_gan_roles_and_the_extra_output_class():
    exp = gan_experiment()
    assert [exp.role_of(p) for p in (0, 1)] == ["honest", "gan-attacker"]
    assert exp.output_classes(10) == 11 and exp.gan.fake_label(10) == 10
    declared = gan_experiment(fake_class=9)
    assert declared.output_classes(10) == 10 and declared.gan.fake_label(10) == 9
    assert Experiment().output_classes(10) == 10


@pytest.mark.parametrize("changes, message", [
    ({"gan": {"attacker": 2}}, "gan.attacker 2 must be one of 0..1"),
    ({"gan": {"fake_class": 3, "victim_class": 3}}, "fake_class must differ"),
    ({"gan": {"start_round": 9}}, "start_round 9 exceeds rounds=3"),
    ({"gan": {"generator_steps": 0}}, "gan.generator_steps"),
    ({"gan": {"victim": 3}}, "gan.victim: unknown key"),
    ({"attack": {}}, "gan and attack are separate experiments"),
    ({"scenario": "standalone"}, "federated scenario"),
    ({"data": {"dataset": "mnist", "partition": "by-class", "classes": {0: [1]}}},
     "classes of each participant 0..1"),
    ({"data": {"dataset": "mnist", "partition": "by-class", "overlap": True}}, "without overlap"),
    ({"data": {"dataset": "mnist", "classes": {0: [1], 1: [2]}}}, "is for data.partition"),
    ({"data": {"dataset": "mnist", "partition": "random"}}, "data.partition"),
])
def test_bad_gan_and_partition_blocks_are_one_line_config_errors(changes, message):
    base = {"data": {"dataset": "mnist"}, "federation": {"num_participants": 2, "rounds": 3},
            "gan": {"attacker": 1}}
    for key, value in changes.items():
        base[key] = {**base[key], **value} if key == "gan" else value
    with pytest.raises(ConfigError, match=message) as err:
        parse_experiment(base)
    assert "\n" not in str(err.value)


def test_classes_outside_the_dataset_are_refused_before_anything_is_written():
    exp = gan_experiment(victim_class=10)
    with pytest.raises(ValueError, match="gan.victim_class 10 is not a class of mnist"):
        check_against_dataset(exp, experiment_dataset(exp))


# -- by-class splits -------------------------------------------------------------------------


def by_class(classes=None, participants=3, train_size=100) -> Experiment:
    return Experiment(data={"dataset": "mnist", "train_size": train_size, "nonmember_size": 300,
                            "partition": "by-class", "classes": classes,
                            "knowledge": SMALL_KNOWLEDGE},
                      federation={"num_participants": participants})


def test_by_class_partitions_hold_only_their_classes_and_are_disjoint():
    labels = np.arange(3000) % 10
    classes = {0: [3], 1: [0, 1, 2, 4], 2: [4, 5]}
    splits = make_splits(len(labels), by_class(classes), labels)
    for p, part in enumerate(splits.partitions):
        assert len(part) == 100 and set(labels[part]) <= set(classes[p])
    assert len(np.unique(np.concatenate(splits.partitions))) == 300
    assert not np.intersect1d(splits.nonmembers, splits.members()).size
    assert set(labels[splits.nonmembers]) == set(range(10))  # held out: every class


def test_by_class_default_deals_classes_round_robin_and_iid_is_unchanged():
    labels = np.arange(3000) % 10
    splits = make_splits(len(labels), by_class(), labels)
    assert [sorted(set(labels[p])) for p in splits.partitions] == [
        [0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    iid = Experiment(data={"train_size": 100, "nonmember_size": 300,
                           "knowledge": SMALL_KNOWLEDGE}, federation={"num_participants": 3})
    with_labels, without = make_splits(3000, iid, labels), make_splits(3000, iid)
    for a, b in zip(with_labels.partitions, without.partitions, strict=True):
        assert np.array_equal(a, b)


def test_by_class_refuses_a_class_too_small_for_the_train_size():
    labels = np.arange(3000) % 10
    with pytest.raises(ValueError, match=r"participant 0 needs 400 records of classes \[3\]"):
        make_splits(len(labels), by_class({0: [3], 1: [1], 2: [2]}, train_size=400), labels)
    with pytest.raises(ValueError, match="data.classes names classes \\[12\\]"):
        make_splits(len(labels), by_class({0: [12], 1: [1], 2: [2]}), labels)


# -- generator -------------------------------------------------------------------------------


def tiny_images(n=64, classes=10) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    return Dataset("tiny", x, rng.integers(0, classes, n), classes, (1, 28, 28),
                   mean=(0.5,), std=(0.25,))


def fixed_discriminator() -> torch.nn.Module:
    torch.manual_seed(0)
    return freeze(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 11)))


def test_generator_loss_goes_down_against_a_fixed_discriminator():
    discriminator = fixed_discriminator()
    frozen = [p.clone() for p in discriminator.parameters()]
    cfg = GanConfig(latent_dim=16, base_channels=8, generator_lr=5e-3)
    generator = build_generator(cfg, tiny_images(), seed=0)
    losses = train_generator(generator, discriminator, generator_optimizer(generator, cfg),
                             VICTIM_CLASS, steps=15, batch_size=8,
                             rng=torch.Generator().manual_seed(0))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert all(torch.equal(a, b) for a, b in zip(frozen, discriminator.parameters(), strict=True))
    samples = generator(generator.noise(4))
    assert samples.min() >= -2.0 - 1e-5 and samples.max() <= 2.0 + 1e-5  # (0-.5)/.25, (1-.5)/.25


def test_generated_samples_join_the_real_data_with_the_fake_label():
    dataset = tiny_images(n=10)
    fakes = torch.randn(3, 1, 28, 28)
    data = WithGenerated(dataset, fakes, label=10)
    assert list(data.indices()) == [10, 11, 12]
    x, y = data.batch(np.array([12, 2, 10]))
    real_x, real_y = dataset.batch(np.array([2]))
    assert torch.equal(x[0], fakes[2]) and torch.equal(x[2], fakes[0])
    assert torch.equal(x[1], real_x[0]) and y.tolist() == [10, int(real_y[0]), 10]


def test_adam_state_survives_the_round_trip_through_named_tensors():
    dataset = tiny_images()
    cfg = GanConfig(latent_dim=16, base_channels=8)
    generator = build_generator(cfg, dataset, seed=0)
    optimizer = generator_optimizer(generator, cfg)
    train_generator(generator, fixed_discriminator(), optimizer, 0, 3, 4, torch.Generator())
    restored = generator_optimizer(generator, cfg)
    load_optimizer_tensors(restored, optimizer_tensors(optimizer))
    for a, b in zip(optimizer.state.values(), restored.state.values(), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the attacker role -----------------------------------------------------------------------


class RecordingAttacker(GanAttacker):
    """Remembers what it trained the global model on."""

    def train_on(self, ctx, data, indices, parameters):
        self.trained_on = (data, indices)
        return super().train_on(ctx, data, indices, parameters)


def test_attacker_upload_is_training_on_its_own_data_and_fake_labelled_samples(tmp_path):
    exp = gan_experiment()
    dataset = experiment_dataset(exp)
    own = experiment_splits(exp, dataset).partitions[1]
    assert VICTIM_CLASS not in set(dataset.y[own])
    sent, config = global_weights(exp), fit_config(exp, 1)
    attacker = RecordingAttacker(1, state=RecordDict(), run_dir=str(tmp_path))
    upload, n, metrics = attacker.fit(sent, config)
    data, indices = attacker.trained_on
    real, fake = indices[indices < len(dataset)], indices[indices >= len(dataset)]
    assert np.array_equal(real, own) and n == len(own)
    assert len(fake) == exp.gan.samples_per_round
    assert set(data.batch(fake)[1].tolist()) == {10}  # the extra class
    # Nothing but that training: an honest participant's training on the same records (same
    # seed, same model) uploads exactly the same weights.
    replay, _ = HonestClient(1).train_on(RoundContext.parse(config, 1, None), data, indices, sent)
    for got, want in zip(upload, get_weights(replay), strict=True):
        assert got.tobytes() == want.tobytes()
    assert metrics["generator_loss_last"] > 0


def test_attacker_is_honest_before_start_round_then_keeps_its_generator(tmp_path):
    exp = gan_experiment(start_round=2)
    state, sent = RecordDict(), global_weights(exp)
    early, _, _ = GanAttacker(1, state=state, run_dir=str(tmp_path)).fit(sent, fit_config(exp, 1))
    honest, _, _ = HonestClient(1).fit(sent, fit_config(exp, 1))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(early, honest, strict=True))
    assert OPTIMIZER_STATE not in state
    for server_round in (2, 3):
        GanAttacker(1, state=state, run_dir=str(tmp_path)).fit(sent, fit_config(exp, server_round))
    steps = state[OPTIMIZER_STATE].to_torch_state_dict()["0.step"]
    assert float(steps) == 2 * exp.gan.generator_steps  # Adam went on from where it stopped
    view = SnapshotStore(tmp_path / SNAPSHOT_DIR).view(local_view(1))
    recorded = view.records(kind=GENERATED_KIND)
    assert [r.round for r in recorded] == [2, 3]
    first, second = (view.read(r)["x"] for r in recorded)
    assert first.shape == (8, 1, 28, 28) and not torch.equal(first, second)


def test_sample_grid_tiles_images_row_by_row_and_is_written(tmp_path):
    from fedattack.reporting import _grid, plot_sample_grid

    images = np.random.default_rng(0).random((3, 1, 4, 5))
    grid = _grid(images, columns=2)
    assert grid.shape == (8, 10, 1)
    assert np.array_equal(grid[0:4, 5:10, 0], images[1, 0])
    assert np.array_equal(grid[4:8, 0:5, 0], images[2, 0])
    assert (grid[4:8, 5:10] == 1).all()  # an empty tile is blank paper
    plot_sample_grid(images, images[:2], tmp_path / "gan" / "round-0001.png", "title")
    assert (tmp_path / "gan" / "round-0001.png").stat().st_size > 0


# -- the measure: noise cannot fool it -------------------------------------------------------


def measured_experiment() -> Experiment:
    return Experiment(
        name="gan-measure", seed=0,
        data={"dataset": "mnist", "train_size": 300, "nonmember_size": 2000,
              "knowledge": SMALL_KNOWLEDGE, **SPLIT},
        model={"arch": "cnn-gan"},
        training={"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 64},
        federation={"num_participants": 2, "rounds": 3},
        gan={"attacker": 1, "victim_class": VICTIM_CLASS, "base_channels": 16,
             "classifier_epochs": 3},
    )


@pytest.fixture(scope="module")
def mnist_measure():
    exp = measured_experiment()
    dataset = experiment_dataset(exp)
    return exp, dataset, build_measure(exp, dataset, torch.device("cpu"))


def unseen_digits(exp: Experiment, dataset, label: int, n: int = 48) -> torch.Tensor:
    """Real MNIST digits of `label` outside every split of the experiment (never seen by the
    classifier nor by the federation, and not among the measure's reference records)."""
    splits = experiment_splits(exp, dataset)
    used = np.concatenate([splits.nonmembers, *splits.partitions])
    free = np.setdiff1d(np.flatnonzero(dataset.y == label), used)
    return dataset.batch(np.random.default_rng(1).choice(free, n, replace=False))[0]


def fails(score: dict) -> bool:
    return score["success"] is False and score["victim_share"] < SUCCESS_SHARE \
        and score["relative_distance"] > 1


def test_real_unseen_victim_digits_succeed_and_the_measure_is_resolved(mnist_measure):
    exp, dataset, measure = mnist_measure
    assert measure.accuracy > 0.85 and measure.resolved
    anchors = measure.anchors()
    assert anchors["victim_share_real"] > 0.8 and abs(anchors["relative_distance_real"]) < 0.3
    real = measure.score(unseen_digits(exp, dataset, VICTIM_CLASS))
    assert real["success"] is True
    assert real["victim_share"] > 0.8 and real["none_share"] < 0.1
    assert abs(real["relative_distance"]) < 0.3
    other = measure.score(unseen_digits(exp, dataset, label=5))  # a real digit, not the victim's
    assert other["success"] is False and other["relative_distance"] > 0.8


def noise_cases(dataset, n: int = 32) -> dict[str, torch.Tensor]:
    """Images in [0, 1] that are no record of any class: checkerboards, blank images, noise."""
    shape = dataset.input_shape
    ys, xs = np.indices(shape[1:])
    fine = torch.from_numpy(((ys + xs) % 2).astype(np.float32)).expand(n, *shape)
    coarse = torch.from_numpy(((ys // 3 + xs // 3) % 2).astype(np.float32)).expand(n, *shape)
    torch.manual_seed(0)
    return {"checkerboard": fine, "coarse checkerboard": 0.2 + 0.6 * coarse,
            "black": torch.zeros(n, *shape), "white": torch.ones(n, *shape),
            "grey": torch.full((n, *shape), 0.4), "uniform noise": torch.rand(n, *shape),
            "gaussian noise": (0.5 + 0.3 * torch.randn(n, *shape)).clamp(0, 1)}


def test_checkerboard_noise_and_blank_images_fail(mnist_measure):
    _, dataset, measure = mnist_measure
    cases = noise_cases(dataset)
    for name, images in cases.items():
        score = measure.score(normalise(images, dataset))
        assert fails(score), (name, score)


def test_an_untrained_generator_fails(mnist_measure):
    exp, dataset, measure = mnist_measure
    # The attacker's own generator before its first step (its seed is not among those that
    # trained the "none" class).
    generator = build_generator(exp.gan, dataset, seed=exp.seed)
    score = measure.score(generate(generator, generator.noise(64, torch.Generator())))
    assert fails(score), score
    assert score["none_share"] > 0.5


def test_the_success_is_null_where_real_victim_records_fail_the_rule(mnist_measure):
    exp, dataset, measure = mnist_measure
    real = unseen_digits(exp, dataset, VICTIM_CLASS)
    unresolved = GanMeasure(measure.classifier, VICTIM_CLASS, 10, reference=real[:24],
                            held_out=unseen_digits(exp, dataset, label=8)[:24],
                            others={5: unseen_digits(exp, dataset, label=5)}, accuracy=0.9)
    assert not unresolved.resolved and unresolved.score(real[24:])["success"] is None


# -- the measure on the AT&T faces: eigenfaces ----------------------------------------------


def faces_experiment(classifier: str = "eigenfaces") -> Experiment:
    """The split of experiments/hitaj-faces.yaml: victim subject 0, 110 photographs a
    participant, 160 held out."""
    return Experiment(
        name="gan-faces", seed=0,
        data={"dataset": "orl-faces", "train_size": 110, "nonmember_size": 160,
              "partition": "by-class", "knowledge": SMALL_KNOWLEDGE,
              "classes": {0: list(range(20)), 1: list(range(20, 40))}},
        model={"arch": "cnn-gan"},
        training={"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 32},
        federation={"num_participants": 2, "rounds": 3},
        gan={"attacker": 1, "victim_class": 0, "base_channels": 32, "classifier": classifier},
    )


@pytest.fixture(scope="module")
def faces_measure():
    exp = faces_experiment()
    dataset = experiment_dataset(exp)
    return exp, dataset, build_measure(exp, dataset, torch.device("cpu"))


def test_the_classifier_option_defaults_to_the_model():
    assert GanConfig().classifier == "model"
    with pytest.raises(ConfigError, match="gan.classifier"):
        parse_experiment({"data": {"dataset": "mnist"}, "federation": {"num_participants": 2},
                          "gan": {"attacker": 1, "classifier": "svm"}})


def test_eigenfaces_features_are_the_whitened_projection_and_two_distances_from_faces():
    torch.manual_seed(0)
    low_rank = (torch.randn(30, 4) @ torch.randn(4, 16)).view(30, 1, 4, 4)  # 4 "eigenfaces"
    faces = low_rank.repeat_interleave(2, -2).repeat_interleave(2, -1) \
        + 0.1 * torch.randn(30, 1, 8, 8)  # smooth but for a little noise
    model = Eigenfaces((1, 8, 8), components=5, outputs=4, pool=2).fit_space(faces)
    features = penultimate(model, faces)
    assert features.shape == (30, 7)  # 5 components, 2 distances: the head's input
    assert torch.allclose(features[:, :5].std(0), torch.ones(5, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(features[:, 5:].mean(0), torch.ones(2, dtype=torch.float64), atol=1e-4)
    noisy = penultimate(model, torch.randn(30, 1, 8, 8))  # far from the faces, and not smooth
    assert noisy[:, 5].mean() > 2 and noisy[:, 6].mean() > 5


def test_eigenfaces_learn_the_faces_and_never_see_the_victims_photographs(faces_measure):
    exp, dataset, measure = faces_measure
    splits = experiment_splits(exp, dataset)
    train_idx, rest_idx = classifier_split(exp, dataset)
    check = check_records(exp, dataset, rest_idx)
    assert not np.intersect1d(train_idx, np.concatenate(splits.partitions)).size
    assert not np.intersect1d(check, np.concatenate([train_idx, *splits.partitions])).size
    assert set(dataset.y[check]) == {0} and len(check) >= 3
    assert measure.accuracy > 0.8  # a CNN from scratch: 0.21 on this split


def test_held_out_photographs_of_the_victim_subject_succeed_on_the_faces(faces_measure):
    exp, dataset, measure = faces_measure
    anchors = measure.anchors()
    assert measure.resolved and anchors["check_records"] >= 3
    assert anchors["victim_share_real"] >= 0.5 and anchors["relative_distance_real"] <= 0.5
    _, rest_idx = classifier_split(exp, dataset)
    real = measure.score(dataset.batch(check_records(exp, dataset, rest_idx))[0])
    assert real["success"] is True and real["none_share"] == 0
    # Another subject's photographs the classifier never saw are not the victim's.
    splits = experiment_splits(exp, dataset)
    trained = np.concatenate(splits.partitions)
    other = trained[dataset.y[trained] == measure.nearest_class]
    score = measure.score(dataset.batch(other)[0])
    assert score["success"] is False and score["victim_share"] < SUCCESS_SHARE


def test_checkerboards_blank_images_noise_and_an_untrained_generator_fail_on_the_faces(
        faces_measure):
    exp, dataset, measure = faces_measure
    cases = noise_cases(dataset)
    scores = {name: measure.score(normalise(images, dataset)) for name, images in cases.items()}
    generator = build_generator(exp.gan, dataset, seed=exp.seed)  # the attacker's, untrained
    scores["untrained generator"] = measure.score(
        generate(generator, generator.noise(32, torch.Generator())))
    for name, score in scores.items():
        assert score["success"] is False, (name, score)
        assert score["victim_share"] < SUCCESS_SHARE or score["relative_distance"] > 1, name
        assert score["none_share"] > 0.5, (name, score)


def test_kernel_distance_is_unbiased_near_zero_and_grows_with_a_shift():
    rng = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 20, generator=rng), torch.randn(200, 20, generator=rng)
    assert abs(mmd2(a, b)) < 0.02
    assert mmd2(a, b + 0.5) > 10 * abs(mmd2(a, b)) and mmd2(a, b + 1) > mmd2(a, b + 0.5)
    with pytest.raises(ValueError, match="2 samples a side"):
        mmd2(a[:1], b)


def test_none_images_are_model_inputs_of_every_kind_in_range():
    exp = measured_experiment()
    dataset = experiment_dataset(exp)
    train_idx, rest_idx = classifier_split(exp, dataset)
    images = none_images(exp, dataset, train_idx, 50, seed=0)
    low, high = -dataset.mean[0] / dataset.std[0], (1 - dataset.mean[0]) / dataset.std[0]
    assert images.shape == (50, 1, 28, 28)
    assert images.min() >= low - 1e-4 and images.max() <= high + 1e-4
    assert len(torch.unique(images.flatten(1), dim=0)) == 50
    assert not np.intersect1d(train_idx, rest_idx).size
    victims = dataset.y[rest_idx] == VICTIM_CLASS
    assert victims.sum() >= 2 and set(dataset.y[rest_idx]) == set(range(10))


def test_a_campaigns_results_md_shows_the_gan_measures(tmp_path):
    from fedattack.campaign import write_campaign_results

    gan = {"experiment": "no-dp", "attack": "gan", "round": 20, "victim_share": 0.875,
           "none_share": 0.0, "relative_distance": 0.31, "success": True,
           "first_success_round": 9}
    membership = {"experiment": "membership", "attack": "whitebox", "auc": 0.61}
    write_campaign_results(tmp_path, [membership, gan])
    text = (tmp_path / "results.md").read_text()
    membership_table, gan_table = text.split("\n\n")
    assert "0.610" in membership_table and "no-dp" not in membership_table
    head, _, row = gan_table.splitlines()
    assert "victim share" in head and "rel. dist." in head and "success" in head
    assert "| no-dp | gan | 20 |" in row and "0.875" in row and "0.31" in row and "True" in row


# -- success over a window of rounds ---------------------------------------------------------


def rounds_with(successes: list[bool | None], first_round: int = 3) -> list[dict]:
    """A hand-made series of measured rounds with these verdicts."""
    return [{"round": first_round + i, "success": s, "victim_share": 0.9 if s else 0.2,
             "none_share": 0.0, "relative_distance": 0.3 if s else 1.4}
            for i, s in enumerate(successes)]


def test_the_window_share_counts_the_last_ten_rounds_with_a_clopper_pearson_interval():
    from scipy.stats import beta

    early = [True] * 6  # rounds 3-8, before the window: not counted
    window = [False, True, True, False, True, True, True, False, True, True]  # rounds 9-18
    w = window_success(rounds_with(early + window))
    assert (w["window_first_round"], w["window_last_round"], w["window_rounds"]) == (9, 18, 10)
    assert w["window_successes"] == 7 and w["window_success_share"] == 0.7
    low, high = w["window_success_share_ci"]
    assert low == pytest.approx(beta.ppf(0.025, 7, 4)) and low == pytest.approx(0.3475, abs=1e-4)
    assert high == pytest.approx(beta.ppf(0.975, 8, 3)) and high == pytest.approx(0.9333,
                                                                                  abs=1e-4)
    assert window_text(w) == "last 10: 7/10 succeed, 95% CI [0.35, 0.93]"


def test_the_window_interval_at_the_ends_and_with_fewer_rounds_or_an_unresolved_round():
    none = window_success(rounds_with([False] * 12))
    assert none["window_success_share"] == 0 and none["window_success_share_ci"] == \
        [0.0, pytest.approx(1 - 0.025 ** 0.1)]
    every = window_success(rounds_with([True] * 10))
    assert every["window_success_share_ci"] == [pytest.approx(0.025 ** 0.1), 1.0]
    short = window_success(rounds_with([True, False, False, False]))
    assert short["window_rounds"] == 4 and short["window_success_share"] == 0.25
    unresolved = window_success(rounds_with([True] * 9 + [None]))
    assert unresolved["window_success_share"] is None
    assert unresolved["window_success_share_ci"] is None and unresolved["window_rounds"] == 10
    assert window_text(unresolved) == "last 10: unresolved"


def test_the_success_figure_is_written(tmp_path):
    path = tmp_path / "gan" / SUCCESS_FIGURE
    plot_success(rounds_with([False, True] * 8), path, "title")
    assert path.stat().st_size > 0
