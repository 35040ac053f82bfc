"""Your model, your data and your attacks (issue 26): a project the test writes itself (a model
class, a data loader, an attack module, a CSV and an image folder) referenced from YAML, checked
in pre-flight, trained and attacked end to end; a model trained outside fedattack audited from its
saved weights and member indices; every bad input one line naming the field, exit 2, nothing in
the run directory lost."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.config import ConfigError, parse_experiment
from fedattack.data import load_knowledge, load_membership
from fedattack.experiment import experiment_dataset, initial_model
from fedattack.features import FeatureExtractor, FeatureSpec
from fedattack.features.gradients import TORCH_FUNC, engine_of, per_example_grads_loop
from fedattack.runner import preflight, run_experiment
from fedattack.snapshots import SnapshotStore
from tests.fakes import ArrayDataset
from tests.user_project import CLASSES, project_for_test, write_csv, write_images

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATA = {"train_size": 40, "nonmember_size": 40,
             "knowledge": {"train_members": 10, "train_nonmembers": 10, "test_members": 10,
                           "test_nonmembers": 10}}


@pytest.fixture
def project(tmp_path, monkeypatch):
    yield from project_for_test(tmp_path, monkeypatch)


def experiment(project, dataset=None, model=None, **blocks) -> dict:
    """A stand-alone experiment on the project's CSV with its TabularNet, as YAML would say."""
    return {"name": "mine", "seed": 1, "scenario": "standalone",
            "python_path": [str(project.root)],
            "data": {"dataset": dataset or {"csv": str(project.csv), "label": "diagnosis"},
                     **TINY_DATA},
            "model": model or {"factory": project.ref("models", "TabularNet"),
                               "kwargs": {"hidden": 12}},
            "training": {"epochs": 3, "batch_size": 16}, **blocks}


# ----- your model


def test_the_factory_gets_the_datasets_shape_and_classes_where_it_names_them(project):
    exp = parse_experiment(experiment(project))
    dataset = experiment_dataset(exp)
    model = initial_model(exp, dataset)
    assert type(model).__name__ == "TabularNet"
    assert model.embed.in_features == 6 and model.embed.out_features == 12  # kwargs: hidden
    assert model.head.out_features == len(CLASSES)
    again = initial_model(exp, dataset)  # seeded by the experiment
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  again.state_dict().values(), strict=True))
    images = parse_experiment(experiment(
        project, {"imagefolder": str(project.images)},
        {"factory": project.ref("models", "image_net"), "kwargs": {"width": 3}}))
    net = initial_model(images, experiment_dataset(images))  # a function taking num_classes only
    assert net[0].out_channels == 3 and net[-1].out_features == len(CLASSES)


def test_per_example_gradients_of_a_layer_without_an_outer_product_rule(project):
    """TabularNet's Conv1d goes through torch.func, its Linear layers through outer products:
    both equal plain autograd, one record at a time."""
    exp = parse_experiment(experiment(project))
    dataset = experiment_dataset(exp)
    model = initial_model(exp, dataset).double().eval()
    x, y = dataset.batch(np.arange(5))
    layers = ("embed", "mix", "head")
    extractor = FeatureExtractor([model], FeatureSpec(gradients=layers, output=False,
                                                      loss=False, label=False), 3)
    assert engine_of(model.mix, extractor.OUTER_PRODUCT_LAYERS) == TORCH_FUNC
    got = next(extractor.batches(ArrayDataset(x.double(), y), np.arange(5)))
    want = per_example_grads_loop(model, x.double(), y, layers)
    for name in layers:
        torch.testing.assert_close(got[f"grad:{name}"][:, 0].double(), want[name],
                                   rtol=1e-6, atol=1e-9)


# ----- your data


def test_a_csv_gives_numeric_features_and_named_classes_in_sorted_order(project):
    dataset = experiment_dataset(parse_experiment(experiment(project)))
    rows = [line.split(",") for line in project.csv.read_text().splitlines()[1:]]
    want_x = np.array([[float(v) for i, v in enumerate(r) if i != 3] for r in rows], np.float32)
    np.testing.assert_array_equal(dataset.x, want_x)
    np.testing.assert_array_equal(dataset.y, [CLASSES.index(r[3]) for r in rows])
    assert dataset.input_shape == (6,) and dataset.num_classes == 3 and dataset.mean is None


def test_an_image_folder_gives_uint8_images_one_class_per_folder(project):
    dataset = experiment_dataset(parse_experiment(experiment(
        project, {"imagefolder": str(project.images), "name": "scans"})))
    assert dataset.name == "scans" and dataset.x.dtype == np.uint8
    assert dataset.x.shape == (120, 1, 8, 8) and dataset.num_classes == 3
    np.testing.assert_array_equal(np.bincount(dataset.y), [40, 40, 40])
    assert dataset.x[dataset.y == 2].mean() > dataset.x[dataset.y == 0].mean() + 100
    x, _ = dataset.batch(np.arange(120))  # normalised by the folder's own statistics
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 0.02


def test_npz_loader_arrays_and_a_torch_dataset_give_the_same_records(project):
    exp = parse_experiment(experiment(project, {"loader": project.ref("data", "load")}))
    arrays = experiment_dataset(exp)
    np.savez(project.root / "records.npz", x=arrays.x, y=arrays.y)
    sources = [{"npz": str(project.root / "records.npz")},
               {"loader": project.ref("data", "torch_dataset")}]
    for source in sources:
        other = experiment_dataset(parse_experiment(experiment(project, source)))
        np.testing.assert_array_equal(other.x, arrays.x)
        np.testing.assert_array_equal(other.y, arrays.y)
    assert arrays.x.shape == (120, 6) and arrays.num_classes == 3


@pytest.mark.parametrize("form", ["csv", "parquet", "json"])
def test_a_hugging_face_dataset_from_a_local_file_equals_the_csv(project, form):
    datasets = pytest.importorskip("datasets", reason="installed by the dev extra")
    table = datasets.load_dataset("csv", data_files=str(project.csv), split="train",
                                  cache_dir=str(project.root / "hf"))
    path = project.csv
    if form == "parquet":
        path = project.root / "records.parquet"
        table.to_parquet(str(path))
    elif form == "json":
        path = project.root / "records.jsonl"
        table.to_json(str(path))
    exp = parse_experiment(experiment(project, {"hf": str(path), "label": "diagnosis",
                                                "split": "train"}))
    from_hf = experiment_dataset(exp)
    from_csv = experiment_dataset(parse_experiment(experiment(project)))
    np.testing.assert_allclose(from_hf.x, from_csv.x)
    np.testing.assert_array_equal(from_hf.y, from_csv.y)
    chosen = parse_experiment(experiment(project, {"hf": str(path), "label": "diagnosis",
                                                   "features": ["f5", "f0"]}))
    np.testing.assert_allclose(experiment_dataset(chosen).x, from_csv.x[:, [5, 0]])


def test_splits_of_your_data_are_label_matched_and_checksummed(project, tmp_path):
    """Label skew over the CSV's records: each victim's non-member targets have, class by class,
    the labels of its member targets, and the split files carry their checksums."""
    from fedattack.data.splits import check_splits
    from fedattack.experiment import cached_dataset, ensure_same_dataset, prepare_run
    from fedattack.io import CorruptedFile

    spec = experiment(project, scenario="federated",
                      federation={"num_participants": 3, "rounds": 1},
                      attack={"attacks": ["threshold-loss"]}, attacker={"kind": "global"})
    spec["data"] = {**spec["data"], "train_size": 20, "partition": "dirichlet", "alpha": 0.5,
                    "min_partition_size": 5, "nonmember_size": 50,
                    "knowledge": {"train_members": 2, "train_nonmembers": 2,
                                  "test_members": 4, "test_nonmembers": 4}}
    exp = parse_experiment(spec)
    prepared = prepare_run(exp, tmp_path / "run")
    dataset, splits = prepared.dataset, prepared.splits
    for victim in splits.victims:
        assert sorted(dataset.y[victim.target_members]) == \
            sorted(dataset.y[victim.target_nonmembers])
    check_splits(tmp_path / "run")  # raises if a file does not match its checksum
    ensure_same_dataset(exp, dataset, tmp_path / "run")  # the records the run was split from
    write_csv(project.csv, 120, seed=9)  # the user edits the CSV under the run's splits
    cached_dataset.cache_clear()
    with pytest.raises(CorruptedFile, match="data.dataset changed since the run began"):
        ensure_same_dataset(exp, experiment_dataset(exp), tmp_path / "run")


# ----- the whole path: YAML -> pre-flight -> training -> attacks (a plug-in among them)


def test_your_model_data_and_attack_run_end_to_end(project, tmp_path):
    spec = experiment(project, attack={
        "plugins": [f"{project.package}.attacks"],
        "attacks": ["whitebox", "threshold-loss", "lira-offline", project.attack],
        "epochs": 3, "kernels": 8, "references": {"models": 2, "epochs": 2}})
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump(spec))
    checked = CliRunner().invoke(app, ["validate", str(config)])
    assert checked.exit_code == 0 and "ok:" in checked.output, checked.output
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    rows = {r["attack"]: r for r in yaml.safe_load(
        (tmp_path / "run" / "results.json").read_text())}
    assert set(rows) == {"whitebox", "threshold-loss", "lira-offline", project.attack}
    # the plug-in's scores are the loss threshold's (both rank by the loss)
    assert rows[project.attack]["auc"] == pytest.approx(rows["threshold-loss"]["auc"])
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["model"]["factory"] == project.ref("models", "TabularNet")
    assert resolved["data"]["dataset"] == {"csv": str(project.csv), "label": "diagnosis"}


def test_an_image_folder_with_a_model_function_trains_and_is_attacked(project, tmp_path):
    exp = parse_experiment(experiment(
        project, {"imagefolder": str(project.images)},
        {"factory": project.ref("models", "image_net")},
        attack={"attacks": ["threshold-loss", "whitebox"], "epochs": 2, "kernels": 8}))
    record, results = run_experiment(exp, tmp_path / "run", show_progress=False)
    assert record["status"] == "finished" and len(record["history"]) == 3
    assert {r["attack"] for r in results} == {"threshold-loss", "whitebox"}


# ----- a model trained elsewhere


def train_elsewhere(project, members: np.ndarray) -> torch.nn.Module:
    """What a user did before fedattack: their own loop, on their own records."""
    sys.path.insert(0, str(project.root))
    from importlib import import_module

    net = import_module(f"{project.package}.models").TabularNet((6,), 3, hidden=12)
    dataset = experiment_dataset(parse_experiment(experiment(project)))
    x, y = dataset.batch(members)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        optimiser.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimiser.step()
    return net


@pytest.mark.parametrize("form", ["safetensors", "state-dict"])
def test_a_model_trained_elsewhere_is_audited_from_its_weights_and_members(project, tmp_path,
                                                                           form):
    from safetensors.torch import save_file

    members = np.random.default_rng(5).choice(120, 40, replace=False)
    net = train_elsewhere(project, members)
    if form == "safetensors":
        weights = tmp_path / "model.safetensors"
        save_file(net.state_dict(), str(weights))
        np.save(tmp_path / "members.npy", members)
        member_file = tmp_path / "members.npy"
    else:
        weights = tmp_path / "model.pt"
        torch.save(net.state_dict(), weights)
        member_file = tmp_path / "members.txt"
        member_file.write_text("\n".join(map(str, members)))
    spec = experiment(project, attack={"attacks": ["threshold-loss", "whitebox", "rmia-offline"],
                                       "epochs": 3, "kernels": 8,
                                       "references": {"models": 4, "epochs": 5}})
    spec["model"]["weights"] = str(weights)
    spec["data"]["members"] = str(member_file)
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["attack", str(config), "--out", str(tmp_path / "run"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    truth = load_membership(run)
    np.testing.assert_array_equal(truth.partitions[0], np.sort(members))
    victim = truth.victim()
    assert np.isin(victim.known_members, members).all()
    assert np.isin(victim.target_members, members).all()
    assert not np.isin(np.concatenate([victim.target_nonmembers, truth.nonmembers]),
                       members).any()
    store = SnapshotStore(run / "snapshots")
    view = store.view("standalone")
    saved = view.read_arrays(view.records(kind="model", tag="final")[0])
    for array, tensor in zip(saved, net.state_dict().values(), strict=True):
        np.testing.assert_array_equal(array, tensor.numpy())
    record = yaml.safe_load((run / "run.json").read_text())
    assert record["trained"] == "elsewhere" and record["history"][0]["train_accuracy"] > 0.9
    rows = {r["attack"]: r for r in yaml.safe_load((run / "results.json").read_text())}
    assert set(rows) == {"threshold-loss", "whitebox", "rmia-offline"}
    # the loss threshold scored the targets on the user's own model, as it was saved
    targets = load_knowledge(run).targets
    x, y = experiment_dataset(parse_experiment(experiment(project))).batch(targets)
    with torch.no_grad():
        loss = F.cross_entropy(net(x), y, reduction="none").numpy()
    np.testing.assert_allclose(np.load(run / "attacks" / "threshold-loss-scores.npy"), -loss,
                               rtol=1e-5, atol=1e-6)


def test_attack_refuses_an_experiment_without_a_trained_model(project, tmp_path):
    config = tmp_path / "plain.yaml"
    config.write_text(yaml.safe_dump(experiment(project, attack={"attacks": ["threshold-loss"]})))
    result = CliRunner().invoke(app, ["attack", str(config)])
    assert result.exit_code == 2
    assert "`fedattack attack` audits a model trained elsewhere" in result.output


# ----- bad input: one line naming the field, exit 2, nothing in the run directory lost


def _pickled_model(project, tmp_path) -> str:
    """A whole pickled module object, which loading with weights_only refuses."""
    path = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(6, 3), path)
    return str(path)


def _bad(project, tmp_path, case: str) -> dict:
    spec = experiment(project, attack={"attacks": ["threshold-loss", "whitebox"], "epochs": 2})
    data, model = spec["data"], spec["model"]
    if case == "factory-does-not-import":
        model["factory"] = "no_such_package.models:Net"
    elif case == "factory-attribute-missing":
        model["factory"] = project.ref("models", "Missing")
    elif case == "factory-not-a-module":
        model.update(factory=project.ref("models", "not_a_model"), kwargs={})
    elif case == "factory-fails-on-a-batch":
        model.update(factory=project.ref("models", "wrong_input"), kwargs={})
    elif case == "csv-without-label":
        data["dataset"] = {"csv": str(project.csv), "label": "outcome"}
    elif case == "csv-not-numeric":
        text = project.csv.read_text().splitlines()
        text[5] = text[5].replace(text[5].split(",")[1], "n/a", 1)
        (tmp_path / "bad.csv").write_text("\n".join(text) + "\n")
        data["dataset"] = {"csv": str(tmp_path / "bad.csv"), "label": "diagnosis"}
    elif case == "image-folder-of-one-class":
        write_images(tmp_path / "one", 10, classes=("only",))
        data["dataset"] = {"imagefolder": str(tmp_path / "one")}
    elif case == "unreadable-image":
        write_images(tmp_path / "broken", 10, classes=("a", "b"))
        (tmp_path / "broken" / "b" / "3.png").write_bytes(b"\x89PNG not really")
        data["dataset"] = {"imagefolder": str(tmp_path / "broken")}
    elif case == "attack-layer-missing":
        spec["attack"]["features"] = {"gradients": ["embed", "decoder"]}
    elif case == "loader-mismatched-lengths":
        data["dataset"] = {"loader": project.ref("data", "mismatched")}
    elif case == "weights-pickled":
        model["weights"] = _pickled_model(project, tmp_path)
        data["members"] = str(tmp_path / "members.txt")
        (tmp_path / "members.txt").write_text(" ".join(map(str, range(40))))
    elif case == "members-outside-the-dataset":
        from safetensors.torch import save_file

        exp = parse_experiment(experiment(project))
        save_file(initial_model(exp, experiment_dataset(exp)).state_dict(),
                  str(tmp_path / "w.safetensors"))
        model["weights"] = str(tmp_path / "w.safetensors")
        data["members"] = str(tmp_path / "members.txt")
        (tmp_path / "members.txt").write_text(", ".join(map(str, range(81, 121))))
    return spec


BAD = {
    "factory-does-not-import": "model.factory: cannot import module 'no_such_package.models' "
                               "(No module named 'no_such_package')",
    "factory-attribute-missing": "model.factory: module '{package}.models' has no 'Missing'",
    "factory-not-a-module": "model.factory: {package}.models:not_a_model returned a dict, not "
                            "a torch.nn.Module",
    "factory-fails-on-a-batch": "model.factory: the model fails on a batch of the dataset of "
                                "shape (8, 6) (RuntimeError: mat1 and mat2 shapes cannot be "
                                "multiplied",
    "csv-without-label": "data.dataset.label: {root}/records.csv has no column 'outcome' "
                         "(columns: f0, f1, f2, diagnosis, f3, f4, f5)",
    "csv-not-numeric": "data.dataset.csv: {tmp}/bad.csv line 6, column 'f1': 'n/a' is not a "
                       "number; every column but the label must be numeric",
    "image-folder-of-one-class": "data.dataset.imagefolder: {tmp}/one holds images of 1 "
                                 "class(es) (only)",
    "unreadable-image": "data.dataset.imagefolder: cannot read image {tmp}/broken/b/3.png "
                        "(UnidentifiedImageError",
    "attack-layer-missing": "attack.features.gradients: unknown layer 'decoder'; available: "
                            "embed, mix, head",
    "loader-mismatched-lengths": "data.dataset.loader: 120 records but 119 labels",
    "weights-pickled": "model.weights: {tmp}/pickled.pt is not a safetensors file or a torch "
                       "state dict readable without pickle",
    "members-outside-the-dataset": "data.members: index 120 is not a record of the dataset "
                                   "(0..119)",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_the_field_and_loses_nothing(project, tmp_path, case):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("an earlier run's notes")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(_bad(project, tmp_path, case)))
    command = "attack" if "weights" in case or "members" in case else "run"
    result = CliRunner().invoke(app, [command, str(config), "--out", str(run_dir), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    want = BAD[case].format(package=project.package, root=project.root, tmp=tmp_path)
    assert lines[0].startswith(f"error: {config}: {want}"), lines[0]
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]
    assert (run_dir / "notes.txt").read_text() == "an earlier run's notes"


@pytest.mark.parametrize(("spec", "message"), [
    ({"model": {"factory": "models.Net"}}, "model.factory: 'models.Net' is not of the form "
                                           "'package.module:callable'"),
    ({"model": {"factory": "m:Net", "arch": "cnn"}}, "model: give model.arch (a built-in "
                                                     "model) or model.factory"),
    ({"model": {"factory": "m:Net", "kwargs": {"num_classes": 3}}},
     "model.kwargs: num_classes come from the dataset"),
    ({"data": {"dataset": {"csv": "a.csv", "npz": "b.npz"}}},
     "data.dataset: give exactly one of csv, npz, imagefolder, hf, loader (got csv, npz)"),
    ({"data": {"dataset": {"npz": "b.npz", "label": "y"}}},
     "data.dataset.label: not an option of npz"),
    ({"data": {"dataset": {"cvs": "a.csv"}}}, "data.dataset.cvs: unknown key"),
    ({"model": {"weights": "w.pt"}, "scenario": "standalone"},
     "model.weights: needs data.members"),
    ({"model": {"weights": "w.pt"}, "data": {"members": "m.npy"}},
     "model.weights: a trained model is audited in the standalone scenario, not 'federated'"),
])
def test_the_config_alone_refuses_a_malformed_reference(spec, message):
    with pytest.raises(ConfigError) as err:
        parse_experiment(spec)
    assert str(err.value).startswith(f"config: {message}"), str(err.value)


def test_parsing_a_user_config_imports_no_user_code(project):
    """The factory and the loader are imported by pre-flight, not by the parse."""
    parse_experiment(experiment(project, {"loader": project.ref("data", "load")}))
    assert not [m for m in sys.modules if m.startswith(project.package)]
    preflight(parse_experiment(experiment(project, {"loader": project.ref("data", "load")})))
    assert f"{project.package}.models" in sys.modules and f"{project.package}.data" in sys.modules

