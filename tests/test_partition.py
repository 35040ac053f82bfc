"""Non-IID partitions: Dirichlet label skew and quantity skew (Flower Datasets' semantics)."""

import json
from pathlib import Path

import numpy as np
import pytest

from fedattack.config import ConfigError, parse_experiment
from fedattack.data import partition
from fedattack.data.splits import make_splits
from fedattack.experiment import CLASS_COUNTS, experiment_dataset, prepare_run
from fedattack.io import read_json


def labels_of(classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), per_class))


def shares(labels, parts, classes):
    """shares[k, j]: the fraction of class k's records that partition j holds."""
    counts = np.array(partition.class_counts(labels, parts, classes), dtype=float).T
    return counts / counts.sum(axis=1, keepdims=True)


def test_dirichlet_partitions_are_disjoint_cover_everything_and_are_seeded():
    labels = labels_of(10, 100)
    parts = partition.dirichlet(labels, 5, 0.5, min_partition_size=10, seed=3)
    everything = np.concatenate(parts)
    assert len(everything) == len(labels) and len(np.unique(everything)) == len(labels)
    assert min(len(p) for p in parts) >= 10
    again = partition.dirichlet(labels, 5, 0.5, min_partition_size=10, seed=3)
    assert all((a == b).all() for a, b in zip(parts, again, strict=True))
    other = partition.dirichlet(labels, 5, 0.5, min_partition_size=10, seed=4)
    assert not all(len(a) == len(b) and (a == b).all() for a, b in zip(parts, other, strict=True))


@pytest.mark.parametrize("alpha", [0.2, 0.5, 2.0])
def test_each_class_is_divided_in_dirichlet_alpha_proportions(alpha):
    """Dir(alpha, ..., alpha) over K partitions: each share has mean 1/K and variance
    (1/K)(1 - 1/K)/(K alpha + 1). 200 classes of 2,000 records (rounding is negligible): the
    sample mean and variance of the 1,000 shares agree within their sampling error."""
    k = 5
    labels = labels_of(200, 2000)
    parts = partition.dirichlet(labels, k, alpha, min_partition_size=0, seed=11)
    p = shares(labels, parts, 200)
    expected = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
    assert abs(p.mean() - 1 / k) < 1e-3
    assert 0.8 < p.var() / expected < 1.2, (p.var(), expected)


def test_small_alpha_skews_and_large_alpha_tends_to_iid():
    labels = labels_of(10, 300)
    skewed = shares(labels, partition.dirichlet(labels, 6, 0.05, min_partition_size=0, seed=1),
                    10)
    flat = shares(labels, partition.dirichlet(labels, 6, 1000.0, min_partition_size=0, seed=1),
                  10)
    assert skewed.max(axis=1).mean() > 0.7  # most of a class in one partition
    assert np.abs(flat - 1 / 6).max() < 0.03


def test_min_partition_size_redraws_and_refuses_after_eleven_draws():
    labels = labels_of(4, 50)
    with pytest.raises(ValueError, match="after 11 draws some participant still held fewer "
                                         "than min_partition_size=60"):
        partition.dirichlet(labels, 4, 0.05, min_partition_size=60, seed=0)


def test_self_balancing_stops_feeding_partitions_above_the_average():
    labels = labels_of(20, 100)
    parts = partition.dirichlet(labels, 4, 0.1, min_partition_size=0, self_balancing=True,
                                seed=2)
    average = len(labels) / 4
    # a partition passes the average only with the class that took it past: at most one class
    assert max(len(p) for p in parts) <= average + 100
    unbalanced = partition.dirichlet(labels, 4, 0.1, min_partition_size=0, seed=2)
    assert max(len(p) for p in parts) <= max(len(p) for p in unbalanced)


def test_per_partition_concentrations_are_accepted_and_checked():
    labels = labels_of(5, 100)
    parts = partition.dirichlet(labels, 3, [10.0, 10.0, 0.1], min_partition_size=0, seed=0)
    assert len(parts) == 3
    with pytest.raises(ValueError, match="3 positive numbers"):
        partition.dirichlet(labels, 3, [1.0, 2.0], seed=0)


def test_quantity_skew_deals_random_records_into_dirichlet_sizes():
    parts = partition.quantity(1000, 5, 0.3, min_partition_size=20, seed=0)
    sizes = [len(p) for p in parts]
    assert sum(sizes) == 1000 and min(sizes) >= 20 and max(sizes) > 300
    assert len(np.unique(np.concatenate(parts))) == 1000
    with pytest.raises(ValueError, match="cannot give 5 participants 300 each"):
        partition.quantity(1000, 5, 0.3, min_partition_size=300)


FEDERATED = {
    "name": "skewed", "seed": 0, "scenario": "federated",
    "data": {"dataset": "purchase100-synth", "num_records": 6000, "train_size": 500,
             "nonmember_size": 1000, "partition": "dirichlet", "alpha": 0.3,
             "knowledge": {"train_members": 20, "train_nonmembers": 20, "test_members": 20,
                           "test_nonmembers": 20}},
    "federation": {"num_participants": 4, "rounds": 1},
}


def test_a_dirichlet_experiment_keeps_the_iid_members_and_writes_its_class_counts(tmp_path):
    exp = parse_experiment(FEDERATED)
    iid = parse_experiment({**FEDERATED, "data": {**FEDERATED["data"], "partition": "iid",
                                                  "alpha": None}})
    dataset = experiment_dataset(exp)
    splits = prepare_run(exp, tmp_path / "run").splits
    iid_splits = prepare_run(iid, tmp_path / "iid").splits
    # the same records train the federation; only who holds which changes
    np.testing.assert_array_equal(np.sort(np.concatenate(splits.partitions)),
                                  np.sort(np.concatenate(iid_splits.partitions)))
    np.testing.assert_array_equal(splits.nonmembers, iid_splits.nonmembers)
    assert len({len(p) for p in splits.partitions}) > 1  # quantity skew comes with it
    written = read_json(tmp_path / "run" / CLASS_COUNTS)
    assert written["partition"] == "dirichlet" and written["sizes"] == \
        [len(p) for p in splits.partitions]
    assert [sum(c) for c in written["counts"]] == written["sizes"]
    assert len(written["counts"][0]) == dataset.num_classes
    assert (tmp_path / "run" / "figures" / "class_counts.png").stat().st_size > 0
    for victim in splits.victims:  # targets drawn from the victim's own (skewed) partition
        members = np.concatenate([splits.partitions[p] for p in victim.partitions])
        assert np.isin(victim.target_members, members).all()


@pytest.mark.parametrize("data, phrase", [
    ({"partition": "dirichlet"}, "data.alpha is for data.partition dirichlet or quantity, which "
                                 "need it"),
    ({"alpha": 0.5}, "data.alpha is for data.partition dirichlet or quantity"),
    ({"partition": "dirichlet", "alpha": [1.0, 2.0]}, "lists 2 concentrations for 4"),
    ({"partition": "quantity", "alpha": -1}, "alpha"),
])
def test_bad_partition_settings_are_refused(data, phrase):
    base = {k: v for k, v in FEDERATED["data"].items() if k not in ("partition", "alpha")}
    with pytest.raises(ConfigError, match=phrase):
        parse_experiment({**FEDERATED, "data": {**base, **data}})


def test_dirichlet_gives_flwr_datasets_own_partitions():
    """Index lists written by flwr-datasets 0.6.1's own DirichletPartitioner
    (tests/data/make_flwr_datasets_partitions.py), reproduced draw for draw: scalar and
    per-partition alpha, self_balancing, no shuffle, and a seed met only at the 11th draw."""
    fixture = json.loads((Path(__file__).parent / "data" / "flwr_datasets_partitions.json")
                         .read_text())
    labels = np.array(fixture["labels"])
    for case in fixture["cases"]:
        got = partition.dirichlet(labels, case["num_partitions"], case["alpha"],
                                  case["min_partition_size"], case["self_balancing"],
                                  case["shuffle"], case["seed"])
        assert [p.tolist() for p in got] == case["partitions"], case


ATTACKED = {**FEDERATED, "attacker": {"kind": "global", "mode": "passive"},
            "attack": {"attacks": ["threshold-loss"]},
            "data": {**FEDERATED["data"], "num_records": 20000, "nonmember_size": 5000,
                     "knowledge": {
                "train_members": 40, "train_nonmembers": 40, "test_members": 60,
                "test_nonmembers": 60}}}


def _histograms(labels, records, classes):
    return np.bincount(labels[records], minlength=classes)


def test_under_label_skew_non_members_carry_the_members_labels_class_by_class():
    """Population non-members would let the label alone reveal membership under Dirichlet skew;
    matched draws (the default with a membership attack) take each label as often as the
    members drawn beside them, from the held-out pool, disjoint from everything else."""
    exp = parse_experiment(ATTACKED)
    assert exp.data.nonmember_labels == "auto"
    dataset = experiment_dataset(exp)
    labels, k = dataset.y, dataset.num_classes
    splits = make_splits(len(dataset), exp, labels)
    population = make_splits(len(dataset), parse_experiment(
        {**ATTACKED, "data": {**ATTACKED["data"], "nonmember_labels": "population"}}), labels)
    gaps = []
    for victim, other in zip(splits.victims, population.victims, strict=True):
        np.testing.assert_array_equal(_histograms(labels, victim.target_nonmembers, k),
                                      _histograms(labels, victim.target_members, k))
        np.testing.assert_array_equal(_histograms(labels, victim.known_nonmembers, k),
                                      _histograms(labels, victim.known_members, k))
        outside = np.concatenate([victim.target_nonmembers, victim.known_nonmembers])
        assert np.isin(outside, splits.nonmembers).all()
        assert len(np.unique(outside)) == len(outside)
        # the members drawn are those of the population draw: only the non-members change
        np.testing.assert_array_equal(victim.target_members, other.target_members)
        gaps.append(np.abs(_histograms(labels, other.target_nonmembers, k)
                           - _histograms(labels, other.target_members, k)).sum() / 2)
    # what the matched draw removes: under alpha 0.3 a label-only guess tells them apart
    assert min(gaps) > 0.4 * 60


def test_population_non_members_under_label_skew_warn_once_at_validate_and_run(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from fedattack.cli import app

    warning = "the label alone carries membership"
    population = {**ATTACKED, "data": {**ATTACKED["data"], "nonmember_labels": "population"}}
    iid = {k: v for k, v in population["data"].items() if k != "alpha"} | {"partition": "iid"}
    for name, raw, warned in (("population", population, True), ("auto", ATTACKED, False),
                              ("iid", {**population, "data": iid}, False)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        for args in (["validate", str(path)], ["validate", "--no-data", str(path)]):
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, result.output
            assert result.output.count(warning) == (1 if warned else 0), (name, args)
    # run warns once too, before anything runs (here it then stops: --out is a file)
    (tmp_path / "file").write_text("")
    done = CliRunner().invoke(app, ["run", str(tmp_path / "population.yaml"), "--out",
                                    str(tmp_path / "file")])
    assert done.output.count(warning) == 1, done.output


def test_matched_non_members_follow_the_known_members_labels_when_sizes_differ():
    raw = {**ATTACKED, "data": {**ATTACKED["data"], "knowledge": {
        "train_members": 40, "train_nonmembers": 15, "test_members": 60, "test_nonmembers": 60}}}
    exp = parse_experiment(raw)
    dataset = experiment_dataset(exp)
    splits = make_splits(len(dataset), exp, dataset.y)
    for victim in splits.victims:
        assert len(victim.known_nonmembers) == 15
        assert set(dataset.y[victim.known_nonmembers]) <= set(dataset.y[victim.known_members])


def test_a_pool_too_small_to_match_the_labels_is_refused_in_one_line():
    raw = {**ATTACKED, "data": {**ATTACKED["data"], "nonmember_size": 150}}
    exp = parse_experiment(raw)
    dataset = experiment_dataset(exp)
    with pytest.raises(ValueError, match="to match the members' labels but the held-out pool "
                       "has .*raise data.nonmember_size"):
        make_splits(len(dataset), exp, dataset.y)


@pytest.mark.parametrize("case", [
    {"alpha": 0.5, "self_balancing": False, "shuffle": True, "seed": 3},
    {"alpha": [0.3, 1.0, 2.0, 0.5], "self_balancing": True, "shuffle": False, "seed": 7},
], ids=["scalar-shuffled", "per-partition-self-balancing"])
def test_dirichlet_equals_the_installed_flwr_datasets_partitioner(case):
    """The same partitions as flwr-datasets' DirichletPartitioner itself (installed with the dev
    extra) on a Hugging Face dataset of the same labels, record for record and in order."""
    partitioners = pytest.importorskip("flwr_datasets.partitioner", reason="the data extra")
    datasets = pytest.importorskip("datasets", reason="the data extra")
    labels = labels_of(6, 50, seed=2)
    table = datasets.Dataset.from_dict({"label": labels.tolist(),
                                        "idx": list(range(len(labels)))})
    theirs = partitioners.DirichletPartitioner(num_partitions=4, partition_by="label",
                                               min_partition_size=5, **case)
    theirs.dataset = table
    ours = partition.dirichlet(labels, 4, case["alpha"], 5, case["self_balancing"],
                               case["shuffle"], case["seed"])
    assert [p.tolist() for p in ours] == [theirs.load_partition(i)["idx"] for i in range(4)]
