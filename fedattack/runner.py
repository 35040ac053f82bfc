"""Run one experiment end to end, whatever its scenario, with a progress display."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from fedattack.config import Experiment
from fedattack.data import Dataset
from fedattack.experiment import (
    RUN_FILE,
    SNAPSHOT_DIR,
    PreparedRun,
    check_against_dataset,
    check_against_splits,
    experiment_dataset,
    experiment_splits,
    prepare_run,
)
from fedattack.interruption import marks_interrupted
from fedattack.io import (
    exclusive,
    read_json,
    remove_file,
    remove_leftover_temporaries,
    remove_tree,
)
from fedattack.progress import run_progress

console = Console(stderr=True)


def _describe(entry: dict) -> str:
    if entry.get("test_accuracy") is None:
        return f"train acc {entry['train_accuracy']:.3f}"
    return f"test acc {entry['test_accuracy']:.3f}"


@contextmanager
def progress_bar(exp: Experiment, show: bool, out: Console | None = None):
    """Yield a callback advancing the display by one round (federated) or one epoch
    (stand-alone); until the first federated round ends, it says that Ray is starting."""
    with run_progress(exp.name, show, out or console) as progress:
        if exp.scenario == "federated":
            progress.phase("round", exp.federation.rounds,
                           "starting Ray")
        else:
            total = exp.training.epochs + (exp.training.finetune_epochs
                                           if exp.scenario == "finetune" else 0)
            progress.phase("epoch", total)

        def advance(*args) -> None:
            entry = args[-1]
            progress.advance(_describe(entry) if entry else "")

        yield advance


def finished_record(run_dir: Path) -> dict | None:
    """run.json of a finished run in run_dir, or None."""
    path = run_dir / RUN_FILE
    if path.exists():
        record = read_json(path)
        if record.get("status") == "finished":
            return record
    return None


def discard_unfinished(run_dir: Path) -> None:
    """Remove what an interrupted run left (its snapshots and run.json), keeping config and
    splits: training restarts from round 0 and, being seeded, records the same models."""
    remove_tree(run_dir, SNAPSHOT_DIR)
    remove_file(run_dir, RUN_FILE)


def train_target(prepared: PreparedRun, show_progress: bool, verbose: bool) -> dict:
    """Train the target model, recording every attacker's view; a finished run is reused."""
    exp, run_dir = prepared.exp, prepared.run_dir
    done = finished_record(run_dir)
    if done is not None:
        console.print(f"{exp.name}: target model already trained in {run_dir}")
        return done
    discard_unfinished(run_dir)
    with marks_interrupted(run_dir, exp.name), progress_bar(exp, show_progress) as advance:
        if exp.scenario == "federated":
            from fedattack.simulation import run_federated

            return run_federated(exp, run_dir, on_round=advance, verbose=verbose,
                                 prepared=prepared)
        from fedattack.standalone import run_standalone

        return run_standalone(exp, run_dir, on_epoch=advance, prepared=prepared)


def attack_target(exp: Experiment, run_dir: Path, show_progress: bool = True,
                  prepared: PreparedRun | None = None) -> list:
    """Run the configured membership inference attacks; finished results are reused (read
    back into result rows, fedattack.results). Without a prepared run (the attack stage alone,
    on a recorded run), the run's splits are checked against the experiment first."""
    from fedattack.membership import run_attacks, write_report
    from fedattack.reporting import RESULTS_JSON
    from fedattack.results import read_rows

    if (run_dir / RESULTS_JSON).exists():
        return read_rows(run_dir / RESULTS_JSON)
    if prepared is None:
        from fedattack.data.splits import ensure_splits
        from fedattack.experiment import (
            ensure_same_dataset,
            experiment_dataset,
            experiment_splits,
        )

        dataset = experiment_dataset(exp)
        ensure_splits(experiment_splits(exp, dataset), run_dir)
        ensure_same_dataset(exp, dataset, run_dir)
    with run_progress(exp.name, show_progress, console):  # the attacks' phases, see membership
        report = run_attacks(exp, run_dir, log=console.print,
                             dataset=prepared.dataset if prepared else None)
    write_report(run_dir, exp, report)
    return read_rows(run_dir / RESULTS_JSON)  # as written: a rerun reads the same rows


def measure_gan(exp: Experiment, run_dir: Path) -> list[dict]:
    """Measure the GAN attack from what its attacker recorded; finished results are reused."""
    from fedattack.reconstruction import measure_attack
    from fedattack.reporting import RESULTS_JSON

    if (run_dir / RESULTS_JSON).exists():
        return read_json(run_dir / RESULTS_JSON)
    return measure_attack(exp, run_dir, log=console.print)


def experiment_finished(exp: Experiment, run_dir: str | Path) -> bool:
    """Whether every stage of `exp` finished in run_dir, so that run_experiment only reads."""
    from fedattack.reporting import RESULTS_JSON

    measured = exp.attack is not None or exp.gan is not None
    return finished_record(Path(run_dir)) is not None and (
        not measured or (Path(run_dir) / RESULTS_JSON).exists())


def preflight(exp: Experiment) -> Dataset:
    """Every check that needs the dataset or the model but no training, run by `validate` and
    before a run claims its directory: the dataset's files are there, the splits fit in it, the
    GAN's classes and DP-SGD suit it, a victim holds the GAN's class, the attack side's training
    is bounded (fedattack.workload), the attack's layers and memory fit. Raises ConfigError,
    DatasetUnavailable or ValueError with one line."""
    from fedattack.membership import check_attack  # the attack side, torch and all
    from fedattack.workload import check_work

    dataset = experiment_dataset(exp)
    check_against_dataset(exp, dataset)
    splits = experiment_splits(exp, dataset)
    check_against_splits(exp, dataset, splits)
    check_work(exp, splits)
    check_attack(exp, dataset)
    return dataset


def run_experiment(exp: Experiment, run_dir: str | Path, show_progress: bool = True,
                   verbose: bool = False) -> tuple[dict, list[dict]]:
    """Train the target model of `exp` into `run_dir`, then attack it if `exp.attack` is set
    (or measure the GAN attack if `exp.gan` is).

    Returns run.json's record and the attack results. What a finished stage wrote is returned
    as it is, never rewritten; an unfinished training is redone from the start.
    """
    dataset = preflight(exp)  # before the directory is claimed: a refused one leaves nothing
    with exclusive(run_dir):
        remove_leftover_temporaries(run_dir)
        prepared = prepare_run(exp, run_dir, dataset)  # once: passed down to every stage
        run_dir = prepared.run_dir
        record = train_target(prepared, show_progress, verbose)
        results = (attack_target(exp, run_dir, show_progress, prepared)
                   if exp.attack is not None else [])
        if exp.gan is not None:
            results = measure_gan(exp, run_dir)
    return record, results
