"""Measures of the GAN attack, computed offline from what the attacker recorded.

The attacker's view (`local-<attacker>`, kind ``generated``) holds, for every attacked round, the
samples its generator made from one fixed latent batch. Each round is measured by:

- an *independent classifier*, trained on held-out real records that the federation never trained
  on (the experiment's architecture, the dataset's classes only): the share of generated samples
  it assigns to the victim's class, and its mean probability for that class;
- *nearest-neighbour distances* (root mean squared pixel difference, pixels in [0, 1]) from each
  generated sample to the victim's own training records of the class and to as many held-out
  records of the class: a generator that copies the victim's records is closer to the former,
  one that produces the class in general is as close to both. For scale, the same distance
  from each held-out record of the class to the victim's records (`nn_distance_real`): how far
  real, unseen examples of the class are.

Only this evaluation reads the ground truth (which records the victims trained on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedattack import reporting
from fedattack.config import Experiment
from fedattack.data import Dataset
from fedattack.experiment import RUN_FILE, SNAPSHOT_DIR, experiment_dataset, experiment_splits
from fedattack.io import read_json, write_json
from fedattack.models import build_model
from fedattack.snapshots import GENERATED_KIND, SnapshotStore, local_view
from fedattack.training import evaluate, resolve_device, train_model

CLASSIFIER_TRAIN_SHARE = 0.8  # of the held-out records; the rest measures its accuracy
GRID_SAMPLES = 32  # generated (and real) samples shown per round
ROUNDS_FILE = "gan/rounds.json"

GAN_COLUMNS = (
    ("experiment", "experiment", "{}"),
    ("attack", "attack", "{}"),
    ("round", "round", "{}"),
    ("victim_share_first", "victim share (first)", "{:.3f}"),
    ("victim_share", "victim share", "{:.3f}"),
    ("victim_confidence", "confidence", "{:.3f}"),
    ("nn_distance_train", "NN dist. train", "{:.3f}"),
    ("nn_distance_heldout", "NN dist. held-out", "{:.3f}"),
    ("nn_distance_real", "NN dist. real", "{:.3f}"),
    ("target_test_accuracy", "model test acc", "{:.3f}"),
    ("epsilon", "epsilon", "{:.2f}"),
)


class ReferenceSets:
    """The real records a round is compared with, as flat [0, 1] pixel rows."""

    def __init__(self, exp: Experiment, dataset: Dataset) -> None:
        splits = experiment_splits(exp, dataset)
        victim = exp.gan.victim_class
        owners = [p for i, p in enumerate(splits.partitions) if i != exp.gan.attacker]
        trained = np.concatenate(owners)
        trained = trained[dataset.y[trained] == victim]
        held_out = splits.nonmembers[dataset.y[splits.nonmembers] == victim]
        if len(trained) == 0 or len(held_out) == 0:
            raise ValueError(f"gan: class {victim} has {len(trained)} training records of the "
                             f"other participants and {len(held_out)} held-out records; both "
                             "are needed to measure the attack")
        size = min(len(trained), len(held_out))  # equal sizes: distances are comparable
        rng = np.random.default_rng(exp.seed)
        self.trained_idx = np.sort(rng.choice(trained, size, replace=False))
        self.trained = pixels(dataset.x[self.trained_idx])
        self.held_out = pixels(dataset.x[np.sort(rng.choice(held_out, size, replace=False))])


def pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 images as float rows in [0, 1]."""
    return torch.from_numpy(images.reshape(len(images), -1)).float() / 255


def to_pixels(samples: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    """Normalised model inputs back to [0, 1] pixel rows (the inverse of Dataset.batch)."""
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return (samples * std + mean).clamp(0, 1).reshape(len(samples), -1)


def nearest_distance(samples: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """For each sample row, the RMS difference to its nearest reference row."""
    return torch.cdist(samples, reference).min(dim=1).values / samples.shape[1] ** 0.5


def independent_classifier(exp: Experiment, dataset: Dataset,
                           device: torch.device) -> tuple[torch.nn.Module, float]:
    """A classifier trained on most held-out records; its accuracy on the rest."""
    held_out = np.random.default_rng(exp.seed).permutation(experiment_splits(exp, dataset)
                                                           .nonmembers)
    cut = int(len(held_out) * CLASSIFIER_TRAIN_SHARE)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(exp.seed + 1)
        model = build_model(exp.model.arch, dataset.input_shape, dataset.num_classes,
                            exp.model.activation)
    train_model(model, dataset, held_out[:cut], None, exp.training, exp.gan.classifier_epochs,
                device, exp.seed + 1)
    return model.eval(), evaluate(model, dataset, held_out[cut:], device)["accuracy"]


@torch.no_grad()
def measure_round(samples: torch.Tensor, classifier: torch.nn.Module, victim_class: int,
                  refs: ReferenceSets, dataset: Dataset) -> dict[str, float]:
    """The measures of one round's generated samples."""
    probs = torch.softmax(classifier(samples), dim=1)
    rows = to_pixels(samples, dataset)
    to_train = nearest_distance(rows, refs.trained)
    to_held_out = nearest_distance(rows, refs.held_out)
    return {
        "victim_share": (probs.argmax(1) == victim_class).float().mean().item(),
        "victim_confidence": probs[:, victim_class].mean().item(),
        "nn_distance_train": to_train.mean().item(),
        "nn_distance_heldout": to_held_out.mean().item(),
        "closer_to_train": (to_train < to_held_out).float().mean().item(),
    }


def round_context(run_record: dict, server_round: int) -> dict:
    """The global model's accuracy after the round and the largest epsilon spent by then."""
    history = {h["round"]: h for h in run_record["history"]}[server_round]
    spent = [r.get("epsilon") for r in run_record["rounds"] if r["round"] <= server_round]
    spent = [e for e in spent if e is not None]
    return {"target_train_accuracy": history["train_accuracy"],
            "target_test_accuracy": history["test_accuracy"],
            "epsilon": max(spent) if spent else None}


def measure_attack(exp: Experiment, run_dir: str | Path, log=print) -> list[dict]:
    """Measure every recorded round; write gan/rounds.json, the figures and results.json.

    results.json holds one flat record per experiment: the last round's measures, the first
    attacked round's victim share and confidence, and the whole series under ``per_round``.
    """
    run_dir = Path(run_dir)
    dataset = experiment_dataset(exp)
    device = resolve_device(exp.device)
    view = SnapshotStore(run_dir / SNAPSHOT_DIR).view(local_view(exp.gan.attacker))
    refs = ReferenceSets(exp, dataset)
    classifier, classifier_accuracy = independent_classifier(exp, dataset, device)
    classifier.cpu()  # the measures are small: they run on the CPU, beside the reference sets
    log(f"{exp.name}: independent classifier accuracy {classifier_accuracy:.3f}")
    run_record = read_json(run_dir / RUN_FILE)
    real = torch.from_numpy(dataset.x[refs.trained_idx[:GRID_SAMPLES]]).float() / 255
    figures = run_dir / reporting.FIGURES / "gan"
    per_round = []
    for rec in view.records(kind=GENERATED_KIND):
        samples = view.read(rec)["x"].float()
        entry = {"round": rec.round,
                 **measure_round(samples, classifier, exp.gan.victim_class, refs, dataset),
                 **round_context(run_record, rec.round)}
        per_round.append(entry)
        generated = to_pixels(samples[:GRID_SAMPLES], dataset).view(-1, *dataset.input_shape)
        reporting.plot_sample_grid(generated.numpy(), real.numpy(),
                                   figures / f"round-{rec.round:04d}.png",
                                   f"{exp.name}: round {rec.round}, victim class "
                                   f"{exp.gan.victim_class}")
    if not per_round:
        raise ValueError(f"{exp.name}: the GAN attacker recorded no samples in {run_dir}")
    write_json(run_dir / ROUNDS_FILE, per_round)
    reporting.plot_series(per_round, ("victim_share", "victim_confidence"),
                          figures / "victim_share.png",
                          f"{exp.name}: independent classifier on generated samples")
    record = summary(exp, per_round, classifier_accuracy)
    record["nn_distance_real"] = nearest_distance(refs.held_out, refs.trained).mean().item()
    reporting.write_results(run_dir, [record], GAN_COLUMNS)
    return [record]


def summary(exp: Experiment, per_round: list[dict], classifier_accuracy: float) -> dict:
    first, last = per_round[0], per_round[-1]
    privacy = exp.privacy
    return {
        "experiment": exp.name, "scenario": exp.scenario, "attack": "gan",
        "attacker": f"participant-{exp.gan.attacker}", "victim_class": exp.gan.victim_class,
        "first_round": first["round"], "round": last["round"],
        "victim_share_first": first["victim_share"],
        "victim_confidence_first": first["victim_confidence"],
        **{k: v for k, v in last.items() if k != "round"},
        "classifier_accuracy": classifier_accuracy,
        "noise_multiplier": privacy.noise_multiplier if privacy else None,
        "share_fraction": privacy.share_fraction if privacy else None,
        "per_round": per_round,
    }
