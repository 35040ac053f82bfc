"""fedattack from Python: build or load an experiment, run it, attack a run, read the results.

The same work as the command line (``fedattack run``, ``fedattack validate``), for a notebook or
a script, with results as typed objects::

    import fedattack

    exp = fedattack.build_experiment("experiments/quickstart.yaml",
                                     federation={"rounds": 5}, name="quick")
    fedattack.check(exp)                 # what `fedattack validate` checks, before any training
    run = fedattack.run(exp, "runs/quick")
    for row in run.strongest():          # fedattack.results.ResultRow
        print(row.attack, row.figures.tpr_at_1pct_fpr, row.figures.tpr_at_1pct_fpr_ci)
    roc = run.roc("whitebox")            # false and true positive rates, AUC and its interval
    run.figures["roc"]                   # paths of the figures the run drew

Bad input raises :class:`fedattack.config.ConfigError` (a one-line message naming the field),
as the command line prints it. A run directory is resumed where it stopped, as with the command
line; a finished stage is read back, never recomputed.

Everything here is importable from the package's top level (``fedattack.run`` ...) without
importing torch until a function that needs it is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from fedattack.campaign import CampaignPlan
    from fedattack.config import Experiment
    from fedattack.results import ResultRow

__all__ = ["Campaign", "Roc", "Run", "attack", "build_experiment", "check", "load", "open_run",
           "run"]


def load(path: str | Path) -> Experiment | CampaignPlan:
    """An experiment YAML, or a campaign YAML (a top-level ``campaign`` key) expanded into its
    experiments. Raises ConfigError naming the file and the field on bad input."""
    from fedattack.campaign import plan_campaign
    from fedattack.config import is_campaign, load_yaml, parse_experiment

    path = Path(path)
    data = load_yaml(path)
    if is_campaign(data):
        return plan_campaign(data, path.read_text(), str(path))
    return parse_experiment(data, str(path))


def build_experiment(source: str | Path | Mapping[str, Any] | Experiment | None = None, /,
               **fields: Any) -> Experiment:
    """An experiment from a YAML path, a mapping shaped as the YAML, or another experiment, with
    `fields` merged over it (nested mappings merge: ``federation={"rounds": 5}`` changes the
    rounds alone). ``build_experiment(name="x", data={...}, ...)`` builds one from fields alone."""
    from fedattack.campaign import deep_merge
    from fedattack.config import Experiment, load_yaml, parse_experiment

    where = "build_experiment()"
    if source is None:
        base: dict[str, Any] = {}
    elif isinstance(source, Experiment):
        base = source.model_dump(mode="json", exclude_unset=True)
    elif isinstance(source, Mapping):
        base = dict(source)
    elif isinstance(source, str | Path):
        base, where = load_yaml(Path(source)), str(source)
    else:
        raise TypeError(f"build_experiment(): a YAML path, a mapping or an Experiment, not "
                        f"{type(source).__name__}")
    return parse_experiment(deep_merge(base, fields), where)


def check(exp: Experiment) -> None:
    """Every check ``fedattack validate`` runs that needs the dataset or the model (the splits
    fit, the attack's layers exist, the work is bounded, your model builds and runs a batch),
    without training. Raises ConfigError (or DatasetUnavailable, ValueError) in one line."""
    from fedattack.runner import preflight

    preflight(exp)


def _as_config(config: str | Path | Experiment | CampaignPlan) -> Experiment | CampaignPlan:
    return load(config) if isinstance(config, str | Path) else config


def run(config: str | Path | Experiment | CampaignPlan, out: str | Path, *,
        progress: bool = False, verbose: bool = False) -> Run | Campaign:
    """Run an experiment (train, record, attack) into `out`, or each experiment of a campaign
    into ``out/<name>/``; returns the :class:`Run` (or :class:`Campaign`) read back from disk.
    An interrupted run resumes where it stopped."""
    from fedattack.campaign import CampaignPlan

    loaded = _as_config(config)
    if isinstance(loaded, CampaignPlan):
        from fedattack.campaign import run_campaign
        from fedattack.io import child_dir

        for item in loaded.items:
            check(item.experiment)
        rows = run_campaign(loaded, out, show_progress=progress, verbose=verbose)
        runs = [open_run(child_dir(out, item.experiment.name)) for item in loaded.items]
        return Campaign(Path(out), loaded, _rows(rows), runs)
    from fedattack.runner import run_experiment

    run_experiment(loaded, out, show_progress=progress, verbose=verbose)
    return open_run(out)


def attack(run_dir: str | Path, *, progress: bool = False) -> Run:
    """The attack stage alone on a recorded run (one `fedattack run` trained, or one recorded
    by your own Flower app): the attacks its config.yaml names, on the snapshots it holds. What
    is already computed (features, reference models, results.json) is reused."""
    from fedattack.runner import attack_target, finished_record

    run_dir = Path(run_dir)
    exp = _run_experiment(run_dir)
    if finished_record(run_dir) is None:
        from fedattack.config import ConfigError

        raise ConfigError(f"{run_dir}: no finished training recorded (run.json); run it first")
    if exp.attack is None:
        from fedattack.config import ConfigError

        raise ConfigError(f"{run_dir}/config.yaml: attack: the block naming the attacks to run "
                          "is missing")
    attack_target(exp, run_dir, show_progress=progress)
    return open_run(run_dir)


def _run_experiment(run_dir: Path) -> Experiment:
    from fedattack.config import ConfigError, load_experiment
    from fedattack.experiment import CONFIG_FILE

    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a fedattack run directory (no {CONFIG_FILE})")
    return load_experiment(path)


def _rows(records: list) -> list[ResultRow]:
    from fedattack.results import ResultRow

    return [r for r in records if isinstance(r, ResultRow)]


def open_run(run_dir: str | Path) -> Run:
    """A run directory as it is on disk: its experiment, run.json and results (none yet if the
    attack stage has not run). Raises ConfigError if `run_dir` is not a run."""
    from fedattack.experiment import RUN_FILE
    from fedattack.io import read_json
    from fedattack.reporting import RESULTS_JSON
    from fedattack.results import read_rows

    run_dir = Path(run_dir)
    exp = _run_experiment(run_dir)
    record = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).exists() else {}
    results = read_rows(run_dir / RESULTS_JSON) if (run_dir / RESULTS_JSON).exists() else []
    return Run(run_dir, exp, record, _rows(results))


@dataclass(frozen=True)
class Roc:
    """One attack's ROC curve on one victim's targets, with the figures it is summarised by."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    auc_ci: tuple[float, float] | None
    min_resolvable_fpr: float  # 1 / the number of non-members: no FPR below is resolvable


@dataclass(frozen=True)
class Run:
    """One experiment's run directory, read back: its config, run.json, and result rows."""

    run_dir: Path
    experiment: Experiment
    record: dict  # run.json: status, per-round history, epsilon ...
    results: list[ResultRow] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.record.get("status", "not started")

    @property
    def history(self) -> list[dict]:
        """The target (global) model's accuracy and loss per round or epoch."""
        return list(self.record.get("history", []))

    @property
    def victims(self) -> list[str]:
        return list(dict.fromkeys(r.victim for r in self.results if r.victim))

    @property
    def figures(self) -> dict[str, Path]:
        """The figures the run drew, by name: ``roc``, ``training-whitebox`` ... (for several
        victims, ``participant-1/roc``)."""
        from fedattack.reporting import FIGURES

        root = self.run_dir / FIGURES
        return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.png"))}

    def strongest(self) -> list[ResultRow]:
        """Each victim's strongest attack, chosen on the selection half of its targets and
        reported on the other half (``row.held_out``); none where no attack was chosen."""
        return [r for r in self.results if r.strongest]

    def row(self, attack: str, victim: str | None = None) -> ResultRow:
        """The result row of `attack` on `victim` (the one victim if there is one)."""
        victim = self._victim(victim)
        for r in self.results:
            if r.attack == attack and r.victim == victim:
                return r
        raise KeyError(f"no result of attack {attack!r} on {victim!r} in {self.run_dir}")

    def table(self) -> str:
        """The results table in Markdown, as results.md holds it."""
        from fedattack.reporting import markdown_table

        return markdown_table(self.results)

    def _victim(self, victim: str | None) -> str:
        if victim is not None:
            return victim
        if len(self.victims) != 1:
            raise ValueError(f"name the victim: this run attacked {self.victims}")
        return self.victims[0]

    def scores(self, attack: str, victim: str | None = None) -> np.ndarray:
        """The attack's score of each target (higher: more likely a member), in the order of
        :meth:`targets`."""
        import numpy as np

        victim = self._victim(victim)
        folder = self.run_dir / "attacks" / ("" if len(self.victims) == 1 else victim)
        path = folder / f"{attack}-scores.npy"
        if not path.is_file():
            raise KeyError(f"no scores of attack {attack!r} on {victim!r} ({path})")
        return np.load(path, allow_pickle=False)

    def targets(self, victim: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The victim's target records (dataset indices) and their membership (1 member, 0 not):
        the evaluation's ground truth."""
        from fedattack.data.splits import load_knowledge
        from fedattack.membership import target_labels

        knowledge = load_knowledge(self.run_dir, self._victim(victim))
        return knowledge.targets, target_labels(self.run_dir, knowledge)

    def roc(self, attack: str, victim: str | None = None) -> Roc:
        """The ROC curve of `attack` on `victim`'s targets, from its saved scores."""
        from fedattack.metrics import roc_curve

        _, labels = self.targets(victim)
        fpr, tpr, _ = roc_curve(labels, self.scores(attack, victim))
        row = self.row(attack, victim)
        return Roc(fpr, tpr, row.figures.auc, row.figures.auc_ci, row.figures.min_resolvable_fpr)


@dataclass(frozen=True)
class Campaign:
    """A campaign's output folder, read back: every experiment's rows and each :class:`Run`."""

    out_dir: Path
    plan: CampaignPlan
    results: list[ResultRow]
    runs: list[Run]

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.experiment.name == name:
                return r
        raise KeyError(f"no experiment {name!r} in campaign {self.plan.name!r}")
