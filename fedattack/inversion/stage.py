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
from pydantic import ValidationError

from fedattack.config import Experiment, InversionConfig, load_experiment
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
from fedattack.io import inside, read_json, write_json
from fedattack.reporting import _pyplot, write_results
from fedattack.snapshots import GLOBAL_VIEW, SnapshotStore, View
from fedattack.training import resolve_device

OUT_DIR = "inversion"  # under the run directory


InversionSettings = InversionConfig  # what the stage runs: the experiment's `inversion:` block
ROWS_DIR = "rows"  # under OUT_DIR: one finished row per file, read back by a rerun


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
                   partition: int, server_round: int,
                   observe: str = "upload") -> ObservedUpdate:
    """The broadcast and the upload (or, under secure aggregation or with `observe`
    "aggregate", the round's aggregate) of `partition` in `server_round`; ValueError naming
    what was not recorded."""
    model = initial_model(exp, dataset)
    names = list(model.state_dict())
    fed = exp.federation
    hidden = fed.secure_aggregation is not None
    secure = hidden or observe == "aggregate"
    if secure and fed.sampled < fed.num_participants:
        raise ValueError("inverting the aggregate needs every participant in every round "
                         "(federation.clients_per_round unset)")
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
    victim = (("all (secure aggregation)" if hidden else "all (aggregate)") if secure
              else f"participant-{partition}")
    noised = " with client-level DP's noise" if fed.client_dp is not None else ""
    observed = ("the round's aggregate (secure aggregation hides every upload)" if hidden
                else f"the round's released aggregate{noised} and the model broadcast before it"
                if secure else "the victim's upload and the model broadcast before it")
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
    name_of = stem(name, observed)
    out = inside(run_dir, OUT_DIR)
    (out / "reconstructions").mkdir(parents=True, exist_ok=True)
    reconstructed = to_pixels(rec.x, dataset)  # in the order of the scores (metrics.score_records)
    np.save(out / "reconstructions" / f"{name_of}.npy", reconstructed.numpy())
    plot_reconstructions(evaluated.originals, reconstructed, evaluated.scores.psnr,
                         evaluated.scores.success, out / "figures" / f"{name_of}.png",
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
            done = finished_row(run_dir, observed, name, settings)
            if done is not None:
                log(f"{exp.name}: {name} on {observed.victim}, round {observed.round} "
                    "already done")
                rows.append(done)
                continue
            log(f"{exp.name}: {name} on {observed.victim}, round {observed.round} "
                f"({observed.target.recipe.describe()})")
            row = asdict(attack_round(exp, run_dir, dataset, observed, name, settings, device))
            write_json(row_path(run_dir, observed, name),
                       {"settings": row_settings(name, settings), "row": row})
            rows.append(row)
    write_results(inside(run_dir, OUT_DIR), rows, RESULT_COLUMNS)
    return rows


def stem(name: str, observed: ObservedUpdate) -> str:
    """The file name of one attack on one observed update (figure, reconstructions, row)."""
    return f"{name}-{observed.victim.split(' ')[0]}-r{observed.round}"


def row_path(run_dir: Path, observed: ObservedUpdate, name: str) -> Path:
    folder = inside(run_dir, OUT_DIR) / ROWS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem(name, observed)}.json"


def row_settings(name: str, settings: InversionSettings) -> dict:
    """What one attack's row depends on beyond the run: its parameters and the measure's."""
    return {"params": settings.params.get(name) or {}, "distractors": settings.distractors,
            "observe": settings.observe}


def finished_row(run_dir: Path, observed: ObservedUpdate, name: str,
                 settings: InversionSettings) -> dict | None:
    """The row a former run of the same attack with the same settings wrote (written whole,
    atomically, after its reconstructions and figure), or None."""
    path = row_path(run_dir, observed, name)
    if not path.is_file():
        return None
    saved = read_json(path)
    if not isinstance(saved, dict) or saved.get("settings") != row_settings(name, settings):
        return None
    return saved.get("row")


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
    if fed.secure_aggregation is not None or settings.observe == "aggregate":
        victims = victims[:1]
    return [observe_update(exp, dataset, view, sizes, p, r, settings.observe)
            for r in rounds for p in victims]


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


RUN_COLUMNS = (("experiment", "experiment", "{}"), *RESULT_COLUMNS[:4],
               ("observed", "observed", "{}"), *RESULT_COLUMNS[4:],
               ("epsilon", "epsilon", "{:.3g}"))
RUN_HEADING = ("\nGradient inversion by the aggregator (the `inversion:` block; 95% intervals over "
               "the reconstructed records: bootstrap for PSNR and SSIM, Wilson for the rates; "
               "reconstructions and figures under inversion/):\n\n")


def result_rows(exp: Experiment, rows: list[dict], record: dict | None) -> list:
    """The stage's rows as result rows of the run's results.json (fedattack.results,
    schema version 3), with the run's final global test accuracy and the accountant's epsilon
    (run.json) beside each."""
    from fedattack.results import InversionFigures, ResultRow

    record = record or {}
    history = record.get("history") or [{}]
    accuracy = record.get("global_test_accuracy", history[-1].get("test_accuracy"))
    attacker = exp.attacker
    mode = attacker.mode if attacker is not None and attacker.kind == "global" else "passive"
    figures = {f for f in InversionFigures.__dataclass_fields__}
    return [ResultRow(
        experiment=exp.name, scenario=exp.scenario, attacker="global", mode=mode,
        knowledge=row["knowledge"], attack=row["attack"], features=None, victim=row["victim"],
        snapshots=f"round {row['round']}", observed=row["observed"],
        reconstruction=InversionFigures(**{k: v for k, v in row.items() if k in figures}),
        global_test_accuracy=accuracy, epsilon=record.get("epsilon"),
        attack_time_s=row["attack_time_s"]) for row in rows]


def write_run_results(run_dir: Path, membership: list, inversion: list) -> None:
    """The run's results.md (the membership table, then the inversion table) and results.json
    (every row), results.json last: it marks the stage finished."""
    from fedattack.io import write_atomic
    from fedattack.reporting import RESULTS_JSON, RESULTS_MD, markdown_table, results_markdown
    from fedattack.results import write_rows

    text = results_markdown(membership) if membership else ""
    text += RUN_HEADING + markdown_table([r.to_dict() for r in inversion], RUN_COLUMNS)
    write_atomic(inside(run_dir, RESULTS_MD), text)
    write_rows(inside(run_dir, RESULTS_JSON), [*membership, *inversion])


def has_inversion_rows(rows: list) -> bool:
    return any(getattr(r, "reconstruction", None) is not None for r in rows)
