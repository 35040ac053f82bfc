"""The offline reconstruction stage: the aggregator's recorded view in, reconstructions, result
rows and figures out, under ``<run>/inversion/``.

For a victim participant p and a round r the aggregator's ``global`` view holds the model it
sent (``sent`` r/p under isolation or ascent, else ``global`` r-1: the broadcast) and p's upload
(``upload`` r/p). :func:`observe_update` turns those into an `InversionTarget` with the local
recipe the server itself sent (fedattack.inversion.recipe.LocalRecipe.of_experiment) and the
record count the participant reports. Under secure aggregation the view holds no upload: the
attacker then reads the round's aggregate (``global`` r), the FedAvg average of every
participant's update, and inverts it as the union of their records (`InversionTarget.shares`);
this needs every participant in every round (no client sampling), since the aggregator must know
whose records the sum holds.

Only :func:`evaluate` reads the ground truth (the victim's partition, ``splits/membership.npz``),
after the attack has returned.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError

from fedattack.config import Experiment, load_experiment
from fedattack.data import Dataset, load_membership
from fedattack.data.splits import SIZES_FILE, check_splits
from fedattack.experiment import (
    CONFIG_FILE,
    RUN_FILE,
    SNAPSHOT_DIR,
    experiment_dataset,
    initial_model,
)
from fedattack.inversion import registry
from fedattack.inversion.core import InversionTarget, Reconstruction, pixel_range
from fedattack.inversion.metrics import RecordScores, score_records, summarise
from fedattack.inversion.recipe import LocalRecipe
from fedattack.inversion.registry import one_line
from fedattack.io import inside, read_json
from fedattack.reporting import _pyplot, write_results
from fedattack.snapshots import GLOBAL_VIEW, SnapshotStore, View
from fedattack.training import resolve_device

OUT_DIR = "inversion"  # under the run directory


class InversionSettings(BaseModel):
    """What the stage runs: attacks (with their parameters), whom and when."""

    model_config = ConfigDict(extra="forbid")

    attacks: list[str] = Field(default_factory=lambda: ["inverting-gradients"])
    params: dict[str, dict] = Field(default_factory=dict)  # attack name -> its parameters
    victims: list[NonNegativeInt] | None = None  # default: every participant
    rounds: list[PositiveInt] | None = None  # default: the first recorded round
    distractors: NonNegativeInt = 1000  # records outside the partition, for identification
    max_records: PositiveInt = 64  # refuse a round with more records (cost grows with them)


@dataclass
class InversionRow:
    """One result row: one attack on one victim's update of one round."""

    experiment: str
    attack: str
    victim: str
    round: int
    threat_model: str
    knowledge: str
    observed: str
    recipe: str
    label_method: str
    n_records: int
    psnr: float
    psnr_ci: list[float]
    ssim: float
    ssim_ci: list[float]
    label_accuracy: float
    label_accuracy_ci: list[float]
    identification_rate: float
    identification_rate_ci: list[float]
    success_rate: float
    success_rate_ci: list[float]
    n_candidates: int
    matching_loss: float
    iterations: int
    attack_time_s: float
    device: str


@dataclass(frozen=True)
class ObservedUpdate:
    """What the aggregator observed of one victim (or of everyone, under secure aggregation)."""

    victim: str
    partitions: tuple[int, ...]  # whose records the update holds
    round: int
    target: InversionTarget
    observed: str


def partition_sizes(run_dir: Path) -> list[int]:
    """Each participant's record count (the example count it reports with every upload)."""
    return list(read_json(check_splits(run_dir, (SIZES_FILE,)) / SIZES_FILE)["partitions"])


def _state(view: View, kind: str, server_round: int, partition: int | None,
           names: list[str]) -> dict[str, torch.Tensor] | None:
    found = view.records(kind=kind, round=server_round, partition=partition)
    if not found:
        return None
    return dict(zip(names, (torch.from_numpy(a) for a in view.read_arrays(found[0])),
                    strict=True))


def observe_update(exp: Experiment, dataset: Dataset, view: View, sizes: list[int],
                   partition: int, server_round: int) -> ObservedUpdate:
    """The broadcast and the upload (or, under secure aggregation, the aggregate) of
    `partition` in `server_round`; ValueError naming what was not recorded."""
    model = initial_model(exp, dataset)
    names = list(model.state_dict())
    fed = exp.federation
    secure = fed.secure_aggregation is not None
    if secure and fed.sampled < fed.num_participants:
        raise ValueError("under secure aggregation the reconstruction needs every participant "
                         "in every round (federation.clients_per_round unset)")
    broadcast = (_state(view, "sent", server_round, partition, names)
                 or _state(view, "global", server_round - 1, None, names))
    after = (_state(view, "global", server_round, None, names) if secure
             else _state(view, "upload", server_round, partition, names))
    if broadcast is None or after is None:
        what = "aggregate" if secure else f"upload of participant {partition}"
        raise ValueError(f"round {server_round}: the broadcast or the {what} was not recorded "
                         "in the aggregator's view (federation.record_rounds)")
    partitions = tuple(range(fed.num_participants)) if secure else (partition,)
    recipe = LocalRecipe.of_experiment(exp, server_round, sizes[partitions[0]])
    low, high = pixel_range(dataset.mean, dataset.std)
    privacy = exp.privacy
    target = InversionTarget(
        model, broadcast, after, recipe, tuple(dataset.input_shape), dataset.num_classes, low,
        high, shared_only=privacy is not None and privacy.share_fraction < 1,
        shares=tuple(sizes[p] for p in partitions) if secure else None)
    victim = "all (secure aggregation)" if secure else f"participant-{partition}"
    observed = ("the round's aggregate (secure aggregation hides every upload)" if secure
                else "the victim's upload and the model broadcast before it")
    return ObservedUpdate(victim, partitions, server_round, target, observed)


def to_pixels(x: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    """Model inputs (n, C, H, W) back to [0, 1] pixels (the inverse of Dataset.batch)."""
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return (x * std + mean).clamp(0, 1)


def pixel_records(dataset: Dataset, indices: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(dataset.x[np.sort(indices)])).float() / 255


def distractor_indices(dataset: Dataset, exclude: np.ndarray, count: int,
                       seed: int) -> np.ndarray:
    """`count` records of the dataset outside `exclude`, drawn from `seed`."""
    rest = np.setdiff1d(np.arange(len(dataset.y)), exclude)
    rng = np.random.default_rng([seed, zlib.crc32(b"inversion-distractors")])
    return np.sort(rng.choice(rest, size=min(count, len(rest)), replace=False))


@dataclass
class Evaluated:
    scores: RecordScores
    originals: torch.Tensor  # the true records, in the order of the reconstructions' pairing
    n_candidates: int


def evaluate(run_dir: Path, dataset: Dataset, observed: ObservedUpdate, rec: Reconstruction,
             distractors: int, seed: int) -> Evaluated:
    """Score `rec` against the records the update was trained on: the only reader of the
    ground truth (the partitions)."""
    truth = load_membership(run_dir)
    batch = np.sort(np.concatenate([truth.partitions[p] for p in observed.partitions]))
    true = pixel_records(dataset, batch)
    others = distractor_indices(dataset, batch, distractors, seed)
    candidates = torch.cat([true, pixel_records(dataset, others)])
    mean_image = torch.from_numpy(np.asarray(dataset.x, dtype=np.float64).mean(0) / 255).float()
    scores = score_records(to_pixels(rec.x, dataset), rec.labels.numpy(), true,
                           np.asarray(dataset.y)[batch], candidates, np.arange(len(batch)),
                           mean_image)
    return Evaluated(scores, true[scores.true_index], len(candidates))


def plot_reconstructions(originals: torch.Tensor, reconstructed: torch.Tensor,
                         psnr: np.ndarray, success: np.ndarray, path: Path, title: str,
                         columns: int = 16) -> None:
    """Each true record above its reconstruction, with the pair's PSNR (and a tick where the
    success rule holds)."""
    plt = _pyplot()
    n = min(len(originals), columns)
    fig, axes = plt.subplots(2, n, figsize=(max(1.2 * n + 0.6, 4.0), 3.0), squeeze=False)
    for i in range(n):
        for row, images in enumerate((originals, reconstructed)):
            image = images[i].permute(1, 2, 0).numpy()
            ax = axes[row, i]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0,
                      vmax=1)
            ax.set(xticks=[], yticks=[])
        axes[1, i].set_xlabel(f"{psnr[i]:.1f} dB" + (" \u2713" if success[i] else ""),
                              fontsize=8)
    axes[0, 0].set_ylabel("true")
    axes[1, 0].set_ylabel("reconstructed")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def attack_round(exp: Experiment, run_dir: Path, dataset: Dataset, observed: ObservedUpdate,
                 name: str, settings: InversionSettings, device: torch.device) -> InversionRow:
    """Run one attack on one observed update, evaluate it, save its reconstructions and figure."""
    attack = registry.get(name)
    rec = attack.run(observed.target, attack.parameters(settings.params.get(name)), device)
    seed = (exp.seed, zlib.crc32(f"{observed.victim}/{observed.round}".encode()))
    evaluated = evaluate(run_dir, dataset, observed, rec, settings.distractors, exp.seed)
    stem = f"{name}-{observed.victim.split(' ')[0]}-r{observed.round}"
    out = inside(run_dir, OUT_DIR)
    (out / "reconstructions").mkdir(parents=True, exist_ok=True)
    reconstructed = to_pixels(rec.x, dataset)  # in the order of the scores (metrics.score_records)
    np.save(out / "reconstructions" / f"{stem}.npy", reconstructed.numpy())
    plot_reconstructions(evaluated.originals, reconstructed, evaluated.scores.psnr,
                         evaluated.scores.success, out / "figures" / f"{stem}.png",
                         f"{exp.name}: {name} on {observed.victim}, round {observed.round}")
    return InversionRow(
        exp.name, name, observed.victim, observed.round, attack.threat_model, attack.knowledge,
        observed.observed, observed.target.recipe.describe(), rec.label_method,
        **summarise(evaluated.scores, seed), n_candidates=evaluated.n_candidates,
        matching_loss=rec.loss, iterations=rec.iterations,
        attack_time_s=round(rec.seconds, 2), device=str(device))


def run_inversion(exp: Experiment, run_dir: str | Path, settings: InversionSettings,
                  log: Callable[[str], None] = print) -> list[dict]:
    """Every configured attack on every configured victim and round; rows to
    ``inversion/results.json`` and ``results.md``."""
    run_dir = Path(run_dir)
    if exp.scenario != "federated":
        raise ValueError("gradient inversion attacks a federated run's uploads")
    for name in settings.attacks:
        registry.get(name).parameters(settings.params.get(name))  # refuse before any work
    dataset = experiment_dataset(exp)
    view = SnapshotStore(run_dir / SNAPSHOT_DIR).view(GLOBAL_VIEW)
    sizes = partition_sizes(run_dir)
    device = resolve_device(exp.device)
    rows = []
    for observed in observations(exp, dataset, view, sizes, settings):
        if observed.target.num_records > settings.max_records:
            raise ValueError(f"{observed.victim} trained on {observed.target.num_records} "
                             f"records in round {observed.round}, more than max_records "
                             f"{settings.max_records}")
        for name in settings.attacks:
            log(f"{exp.name}: {name} on {observed.victim}, round {observed.round} "
                f"({observed.target.recipe.describe()})")
            rows.append(asdict(attack_round(exp, run_dir, dataset, observed, name, settings,
                                            device)))
    write_results(inside(run_dir, OUT_DIR), rows, RESULT_COLUMNS)
    return rows


def observations(exp: Experiment, dataset: Dataset, view: View, sizes: list[int],
                 settings: InversionSettings) -> list[ObservedUpdate]:
    """The observed updates the settings ask for (one per round under secure aggregation)."""
    fed = exp.federation
    recorded = sorted({r.round for r in view.records(kind="global") if r.round > 0})
    rounds = settings.rounds or recorded[:1]
    victims = settings.victims if settings.victims is not None else list(range(len(sizes)))
    bad = [p for p in victims if not 0 <= p < len(sizes)]
    if bad or not rounds:
        raise ValueError(f"no such participant {bad}" if bad else "no round was recorded")
    if fed.secure_aggregation is not None:
        victims = victims[:1]
    return [observe_update(exp, dataset, view, sizes, p, r) for r in rounds for p in victims]


RESULT_COLUMNS = (
    ("attack", "attack", "{}"),
    ("victim", "victim", "{}"),
    ("round", "round", "{}"),
    ("n_records", "records", "{}"),
    ("psnr", "PSNR (dB)", "{:.1f}"),
    ("ssim", "SSIM", "{:.3f}"),
    ("label_accuracy", "labels", "{:.2f}"),
    ("identification_rate", "identified", "{:.2f}"),
    ("success_rate", "recovered", "{:.2f}"),
    ("attack_time_s", "time (s)", "{:.1f}"),
)


def settings_of(attacks: list[str] | None, victims: list[int] | None,
                rounds: list[int] | None, iterations: int | None,
                restarts: int | None) -> InversionSettings:
    """The settings of the command line: `iterations` for every attack, `restarts` for those
    that have restarts; ValueError (one line) for an unknown attack or a bad value."""
    names = attacks or ["inverting-gradients"]
    params = {}
    for name in names:
        fields = registry.get(name).params.model_fields
        given = {"iterations": iterations, "restarts": restarts}
        params[name] = {k: v for k, v in given.items() if v is not None and k in fields}
    try:
        return InversionSettings(attacks=names, params=params, victims=victims or None,
                                 rounds=rounds or None)
    except ValidationError as err:
        raise ValueError(one_line(err, "inversion")) from None


def invert_run(run_dir: str | Path, settings: InversionSettings,
               log: Callable[[str], None] = print) -> list[dict]:
    """The stage on a finished run directory, read as untrusted input."""
    run_dir = Path(run_dir)
    finished = (run_dir / RUN_FILE).is_file() and read_json(run_dir / RUN_FILE).get(
        "status") == "finished"
    if not (run_dir / CONFIG_FILE).is_file() or not finished:
        raise ValueError("not a finished run directory (no config.yaml, or run.json does not "
                         "say finished)")
    return run_inversion(load_experiment(run_dir / CONFIG_FILE), run_dir, settings, log)
