"""Reference models of LiRA and RMIA: the data they train on, vectorised training, the cache."""

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from fedattack.attacks.references import (
    ReferenceSet,
    ReferenceSpec,
    cache_root,
    dataset_digest,
    membership_matrix,
    paired_halves,
    reference_plan,
    train_sequential,
    train_vectorised,
    vectorisable,
)
from fedattack.config import Experiment, TrainConfig
from fedattack.data import Knowledge
from fedattack.io import read_json, write_json
from fedattack.models.cnn import SmallCNN
from fedattack.models.fc import FCNet
from fedattack.progress import run_progress
from tests.fakes import ArrayDataset, planning_input


def blobs(n: int = 400, d: int = 12, classes: int = 5) -> ArrayDataset:
    rng = np.random.default_rng(3)
    y = rng.integers(0, classes, n)
    centres = rng.normal(0, 1, (classes, d))
    x = (centres[y] + rng.normal(0, 1.0, (n, d))).astype(np.float32)
    return ArrayDataset(x, y.astype(np.int64), num_classes=classes, name="blobs")


def build(seed: int) -> FCNet:
    torch.manual_seed(seed)
    return FCNet(12, 5, "tanh", hidden=(16, 8))


def test_paired_halves_put_every_record_in_exactly_half_of_the_references():
    pool = np.arange(100, 201)  # 101 records: one is dropped
    sets = paired_halves(pool, 6, seed=1)
    assert [len(s) for s in sets] == [50] * 6
    inside = membership_matrix(pool, sets)
    assert sorted(inside.sum(axis=1)) == [0] + [3] * 100  # one record dropped, once
    assert all(np.isin(s, pool).all() for s in sets)
    assert all((a == b).all() for a, b in zip(sets, paired_halves(pool, 6, seed=1), strict=True))
    with pytest.raises(ValueError, match="even"):
        paired_halves(pool, 3, seed=1)


@pytest.mark.parametrize("recipe", [
    {"optimizer": "adam", "lr": 1e-2, "batch_size": 16},
    {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "batch_size": 24,
     "lr_milestones": [2], "lr_gamma": 0.5},
])
@pytest.mark.parametrize("path", ["batched products", "vmap"])
def test_vectorised_references_equal_sequential_ones(recipe, path, monkeypatch):
    from fedattack.attacks import references

    if path == "vmap":  # the path of every model that is not a chain of Linear layers
        monkeypatch.setattr(references, "linear_chain", lambda model: None)
    else:
        assert references.linear_chain(build(0)) is not None
    data, cfg = blobs(), TrainConfig(**recipe)
    sets = paired_halves(np.arange(400), 4, seed=0)
    seeds = [11, 12, 13, 14]
    device = torch.device("cpu")
    together = train_vectorised([build(s) for s in seeds], data, sets, seeds, cfg, 3, device)
    apart = train_sequential([build(s) for s in seeds], data, sets, seeds, cfg, 3, device)
    for a, b in zip(together, apart, strict=True):
        for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
    # and training did move them: the references differ from their initialisation
    assert not torch.allclose(together[0].classifier.weight, build(11).classifier.weight)


def test_only_fc_nets_run_as_batched_products():
    from fedattack.attacks.references import linear_chain

    chain = linear_chain(build(0))
    assert [name for name, m in chain if isinstance(m, torch.nn.Linear)] == [
        "features.0", "features.2", "classifier"]  # hidden=(16, 8)
    assert linear_chain(SmallCNN((1, 28, 28), 10)) is None
    assert linear_chain(torch.nn.Sequential(torch.nn.Linear(3, 3))) is None


def test_models_with_buffers_are_not_vectorised():
    assert vectorisable(build(0))
    assert vectorisable(SmallCNN((1, 28, 28), 10))
    assert not vectorisable(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)))
    assert not vectorisable(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)))
    with pytest.raises(ValueError, match="equal training sets"):
        train_vectorised([build(1), build(2)], blobs(), [np.arange(10), np.arange(11)], [1, 2],
                         TrainConfig(), 1, torch.device("cpu"))


def spec_of(data, seeds=(1, 2), lr=1e-2, epochs=2, sets=None) -> ReferenceSpec:
    sets = sets or paired_halves(np.arange(200), len(seeds), seed=0)
    return ReferenceSpec(dataset_digest(data), {"arch": "fc-tiny"},
                         TrainConfig(lr=lr).model_dump(mode="json"), epochs, tuple(seeds),
                         tuple(sets))


def obtain(spec, data, root, lr=1e-2, vectorised=True):
    return ReferenceSet.obtain(spec, build, data, TrainConfig(lr=lr), torch.device("cpu"),
                               root, vectorised=vectorised, log=lambda _: None)


def test_the_cache_is_reused_and_invalidated_by_every_determining_input(tmp_path):
    data = blobs()
    first = obtain(spec_of(data), data, tmp_path)
    again = obtain(spec_of(data), data, tmp_path, vectorised=False)  # a cache hit either way
    assert first.trained and not again.trained
    for a, b in zip(first.models, again.models, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb)
    other_sets = paired_halves(np.arange(1, 201), 2, seed=0)
    changed = {
        "seed": spec_of(data, seeds=(1, 3)),
        "recipe": spec_of(data, lr=2e-2),
        "epochs": spec_of(data, epochs=3),
        "indices": spec_of(data, sets=other_sets),
        "dataset": spec_of(ArrayDataset(data.x + 1, data.y, name="blobs")),
    }
    keys = {spec_of(data).key()} | {s.key() for s in changed.values()}
    assert len(keys) == len(changed) + 1
    for what, spec in changed.items():
        assert obtain(spec, data, tmp_path).trained, what
        assert not obtain(spec, data, tmp_path).trained, what
    # a cache entry whose description does not match, or whose weights are damaged, is not
    # trusted: the set is trained again
    meta = tmp_path / "references" / spec_of(data).key() / "reference.json"
    write_json(meta, {**read_json(meta), "epochs": 99})
    assert obtain(spec_of(data), data, tmp_path).trained
    assert not obtain(spec_of(data), data, tmp_path).trained
    weights = meta.parent / "weights.npz"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    weights.write_bytes(bytes(damaged))
    assert obtain(spec_of(data), data, tmp_path).trained
    assert not obtain(spec_of(data), data, tmp_path).trained


def test_training_references_shows_a_bar_of_models_or_of_epochs(tmp_path):
    """A run's display gains a row for reference-model training: models one after the other,
    epochs when trained together; a cache hit trains nothing and adds no row."""
    data = blobs()
    for vectorised, row in ((False, "reference model  2/2"), (True, "reference epoch  2/2")):
        screen = io.StringIO()
        with run_progress("refs", True, Console(file=screen, width=80)):
            obtain(spec_of(data), data, tmp_path / str(vectorised), vectorised=vectorised)
            obtain(spec_of(data), data, tmp_path / str(vectorised), vectorised=vectorised)
        rows = screen.getvalue().splitlines()
        assert [r for r in rows if r.startswith("reference")] == [
            next(r for r in rows if r.startswith(row))]
        assert "done" in rows[-1].split()


def test_the_cache_lies_in_the_campaign_folder_when_there_is_one(tmp_path):
    run = tmp_path / "campaign" / "exp"
    run.mkdir(parents=True)
    assert cache_root(run) == run
    (tmp_path / "campaign" / "campaign.yaml").write_text("campaign: x\n")
    assert cache_root(run) == tmp_path / "campaign"


def experiment() -> Experiment:
    return Experiment(name="refs", seed=4, scenario="standalone",
                      data={"dataset": "purchase100-synth", "train_size": 100,
                            "nonmember_size": 200, "shadow_size": 60},
                      attack={"attacks": ["lira-offline"], "references": {"models": 4}})


def FakeDataset() -> ArrayDataset:  # noqa: N802 (reads as the dataset it makes)
    return ArrayDataset(np.zeros((10, 600), np.uint8), np.zeros(10, np.int64), num_classes=100,
                        name="fake")


def test_offline_references_never_train_on_targets_and_online_ones_on_half():
    rng = np.random.default_rng(0)
    order = rng.permutation(1000)
    know = Knowledge("all", known_members=np.sort(order[:50]),
                     known_nonmembers=np.sort(order[50:100]), shadow=np.sort(order[100:160]),
                     targets=np.sort(order[160:260]))
    exp = experiment()
    offline = reference_plan("lira-offline", planning_input(exp, know, FakeDataset()))
    population = np.concatenate([know.shadow, know.known_members, know.known_nonmembers])
    for s in offline.train_sets:
        assert not np.isin(s, know.targets).any()
        assert np.isin(s, population).all() and len(s) == 80
    online = reference_plan("rmia-online", planning_input(exp, know, FakeDataset()))
    inside = membership_matrix(know.targets, list(online.train_sets))
    assert (inside.sum(axis=1) == 2).all()  # every target IN exactly 2 of the 4
    assert offline.key() != online.key()
    same = reference_plan("rmia-offline", planning_input(exp, know, FakeDataset()))
    assert same.key() == offline.key()


def test_the_reference_count_is_even_and_at_least_two():
    from fedattack.config import ReferenceConfig

    assert ReferenceConfig(models=4).models == 4
    for bad in (1, 3):
        with pytest.raises(ValueError, match="multiple"):
            ReferenceConfig(models=bad)
