"""The `fedattack` command: run and validate experiment and campaign files."""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import replace
from pathlib import Path

import typer
from rich.console import Console

from fedattack.campaign import CampaignPlan, over_seeds, plan_campaign, run_campaign, selected
from fedattack.config import ConfigError, Experiment, is_campaign, load_yaml, parse_experiment
from fedattack.interruption import (
    INTERRUPTED,
    Interruption,
    announce_interrupted,
    descendants,
    interrupting_signals,
    stop_processes,
)
from fedattack.io import CorruptedFile, DirectoryBusy, UnsafePath, child_dir, exclusive
from fedattack.reporting import markdown_table, undertrained_warnings
from fedattack.terminal import print_campaign, print_run

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="fedattack: federated-learning privacy attacks on Flower.")

def show_version(value: bool) -> None:
    """`fedattack --version`: this package's version, and Flower's and torch's."""
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    from fedattack import __version__

    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"fedattack {__version__} (flwr {of('flwr')}, torch {of('torch')})")
    raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """fedattack: federated-learning privacy attacks on Flower."""


USAGE_ERROR = 2


def fail(message: str) -> None:
    """One line on stderr, exit code 2, no traceback: for anything the user can fix."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(USAGE_ERROR)


def user_errors():
    """The exceptions that mean bad input, not a bug."""
    from fedattack.data import DatasetUnavailable
    from fedattack.protocol import FederationFailed
    from fedattack.simulation import RayStartFailed

    return (ConfigError, DatasetUnavailable, FileExistsError, UnsafePath, CorruptedFile,
            FederationFailed, RayStartFailed, DirectoryBusy)


def disk_full(err: OSError) -> str:
    """The one line for a full disk: what could not be written, and what to do."""
    where = f" writing {err.filename}" if err.filename else ""
    return (f"no space left on device{where}: nothing was half-written; free some space and "
            "run the same command again to resume")


NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def fail_on_os_error(err: OSError) -> None:
    """One line for a full disk or a file that may not be written (a read-only run directory);
    any other OSError is a bug and goes on with its traceback."""
    if err.errno == errno.ENOSPC:
        fail(disk_full(err))
    if err.errno in NOT_WRITABLE and err.filename:
        fail(f"cannot write in {Path(err.filename).parent} ({err.strerror}): make it writable, or "
             "choose another --out, and run the same command again")
    raise err


def exit_interrupted(interruption: Interruption) -> None:
    """Ctrl-C or SIGTERM: stop every process the run started (those noted when the signal came,
    and any started since), say how to resume, exit 130. When a library's threads still wait for
    replies that will never come (Flower's server threads, once Ray is gone), the process exits
    at once rather than wait for them: every file was written atomically and run.json says
    `interrupted`."""
    stop_processes(interruption.processes + descendants())
    announce_interrupted()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        os._exit(INTERRUPTED)
    raise typer.Exit(INTERRUPTED)


def preflight_all(loaded: Experiment | CampaignPlan, source: Path) -> None:
    """Check every experiment against its dataset and model before anything runs; ConfigError
    naming the file (and the campaign's experiment) otherwise."""
    from fedattack.data import DatasetUnavailable
    from fedattack.runner import preflight

    campaign = isinstance(loaded, CampaignPlan)
    for exp in [i.experiment for i in loaded.items] if campaign else [loaded]:
        try:
            preflight(exp)
        except (ValueError, DatasetUnavailable) as err:
            where = f"{source}: experiment {exp.name!r}" if campaign else str(source)
            raise ConfigError(f"{where}: {err}") from None


def warn_label_skew(loaded: Experiment | CampaignPlan, source: Path) -> None:
    """One warning line for the experiments whose label alone carries membership
    (data.nonmember_labels: population under a label-skewed partition)."""
    from fedattack.data.splits import label_carries_membership

    experiments = ([i.experiment for i in loaded.items] if isinstance(loaded, CampaignPlan)
                   else [loaded])
    skewed = [exp.name for exp in experiments if label_carries_membership(exp)]
    if skewed:
        typer.echo(f"warning: {source}: {', '.join(skewed)}: data.nonmember_labels: population "
                   "under a label-skewed partition: a victim's members are of its few classes, "
                   "its non-members of all, so the label alone carries membership; "
                   "nonmember_labels: matched (the default, auto) draws the non-members label "
                   "by label", err=True)


def load_config(path: Path) -> Experiment | CampaignPlan:
    """An experiment file, or a campaign file (one with a top-level `campaign` key) expanded."""
    data = load_yaml(path)
    if is_campaign(data):
        return plan_campaign(data, path.read_text(), str(path))
    return parse_experiment(data, str(path))


@app.command()
def validate(
    config: Path = typer.Argument(..., help="experiment or campaign YAML"),
    no_data: bool = typer.Option(False, "--no-data", help="check the file alone, not against "
                                 "its dataset's files and its model"),
) -> None:
    """Check an experiment or campaign file without running it.

    Its keys and values, then its dataset's files, split sizes, layers and the attack's memory.
    """
    try:
        loaded = load_config(config)
        warn_label_skew(loaded, config)
        if not no_data:
            preflight_all(loaded, config)
    except user_errors() as err:
        fail(str(err))
    except ValueError as err:  # e.g. a dataset too small for the requested split sizes
        fail(f"{config}: {err}")
    if isinstance(loaded, CampaignPlan):
        typer.echo(f"ok: {config} is a valid campaign {loaded.name!r} of "
                   f"{len(loaded.items)} experiments")
    else:
        typer.echo(f"ok: {config} is a valid {loaded.scenario} experiment {loaded.name!r}")


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment or campaign YAML"),
    out: Path = typer.Option(None, "--out", help="run directory (default: runs/ and the "
                             "experiment's or campaign's name)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    verbose: bool = typer.Option(False, "--verbose", help="show Flower and Ray logs"),
    only: list[str] = typer.Option(None, "--only", help="a campaign's experiment (its entry's "
                                   "name, or an expanded name) to run alone; may be repeated"),
) -> None:
    """Run an experiment, or every experiment of a campaign.

    Trains the target model, records what each attacker observes, attacks, and prints the
    results (results.md and results.json keep them in the run directory). A rerun resumes where
    an interrupted one stopped.
    """
    with interrupting_signals() as interruption:
        try:
            loaded = load_config(config)
            if only and not isinstance(loaded, CampaignPlan):
                raise ConfigError(f"--only: {config} is one experiment, not a campaign")
            to_run = loaded
            if only:  # the experiments that will run are checked, those left alone are not
                chosen = selected(loaded, only)
                to_run = replace(loaded, items=[i for i in loaded.items
                                                if i.experiment.name in chosen])
            preflight_all(to_run, config)
            warn_label_skew(to_run, config)
            if isinstance(loaded, CampaignPlan):
                run_campaign_command(loaded, out or child_dir("runs", loaded.name), quiet,
                                     verbose, only)
            else:
                run_experiment_command(loaded, out or child_dir("runs", loaded.name), quiet,
                                       verbose)
        except user_errors() as err:
            fail(str(err))
        except ValueError as err:  # e.g. a dataset too small for the requested split sizes
            fail(str(err))
        except OSError as err:
            fail_on_os_error(err)
        except KeyboardInterrupt:
            exit_interrupted(interruption)


@app.command()
def attack(
    config: Path = typer.Argument(..., help="a standalone experiment YAML with model.weights "
                                  "and data.members, or the run directory of a federation "
                                  "recorded elsewhere (your Flower app, fedattack.messageapi)"),
    out: Path = typer.Option(None, "--out", help="run directory (default: runs/<name>)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
) -> None:
    """Audit a model trained elsewhere: run the experiment's membership attacks on the model of
    model.weights (its factory or arch), whose training records data.members lists, without
    training it (reference and shadow models are trained by the experiment's recipe); or on
    the federation a Flower app of yours recorded into a run directory."""
    if config.is_dir():
        attack_recorded(config, out, quiet)
        return
    try:
        loaded = load_config(config)
    except user_errors() as err:
        fail(str(err))
    if not isinstance(loaded, Experiment) or loaded.model.weights is None:
        fail(f"{config}: `fedattack attack` audits a model trained elsewhere: give model.weights "
             "and data.members in a standalone experiment (`fedattack run` trains one)")
    if loaded.attack is None:
        fail(f"{config}: attack: the block naming the attacks to run is missing")
    run(config, out=out, quiet=quiet, verbose=False, only=None)


def attack_recorded(run_dir: Path, out: Path | None, quiet: bool) -> None:
    """`fedattack attack RUN_DIR`: the attacks of RUN_DIR/config.yaml on the finished training
    recorded there (by fedattack.messageapi around a Flower app), results written beside it."""
    from fedattack.experiment import CONFIG_FILE
    from fedattack.runner import finished_record

    if out is not None and out.resolve() != run_dir.resolve():
        fail(f"--out: {run_dir} is a run directory: its results are written in it")
    if not (run_dir / CONFIG_FILE).is_file():
        fail(f"{run_dir}: no {CONFIG_FILE}: not a run directory (give an experiment YAML, or the "
             "run directory your app's fedattack.messageapi.audited recorded)")
    try:
        loaded = load_config(run_dir / CONFIG_FILE)
        if not isinstance(loaded, Experiment):
            raise ConfigError(f"{run_dir / CONFIG_FILE}: not an experiment")
        if loaded.attack is None:
            raise ConfigError(f"{run_dir / CONFIG_FILE}: attack: the block naming the attacks to "
                              "run is missing (add it to the audit YAML and record again)")
        if finished_record(run_dir) is None:
            raise ConfigError(f"{run_dir}: holds no finished training (run.json's status is not "
                              "finished): let the federation finish, or record it again")
    except user_errors() as err:
        fail(str(err))
    run(run_dir / CONFIG_FILE, out=run_dir, quiet=quiet, verbose=False, only=None)


def stdout() -> Console:
    """Standard output at the terminal's width (80 columns when it is not a terminal)."""
    return Console(highlight=False)


def warn_undertrained(records: list[dict]) -> None:
    """On stderr, one line per learnt attack that learnt less than the loss threshold: wrapped
    at the terminal's width on a terminal, whole where stderr is read by a program."""
    console = Console(stderr=True, highlight=False)
    for line in undertrained_warnings(records):
        console.print(line, markup=False, soft_wrap=not console.is_terminal)


def run_campaign_command(plan: CampaignPlan, out_dir: Path, quiet: bool, verbose: bool,
                         only: list[str] | None = None) -> None:
    from fedattack.runner import experiment_finished

    records = run_campaign(plan, out_dir, show_progress=not quiet, verbose=verbose, only=only)
    done = sum(experiment_finished(item.experiment, child_dir(out_dir, item.experiment.name))
               for item in plan.items)
    typer.echo(f"campaign {plan.name}: {done} of {len(plan.items)} experiments finished; "
               f"results in {out_dir}")
    if records:
        print_campaign(stdout(), records, over_seeds(plan, records))
    warn_undertrained(records)
    if records:
        write_html_report(plan.items[0].experiment, out_dir, always=True)


def run_experiment_command(exp: Experiment, run_dir: Path, quiet: bool, verbose: bool) -> None:
    from fedattack.runner import run_experiment

    record, results = run_experiment(exp, run_dir, show_progress=not quiet, verbose=verbose)
    report_run(exp, run_dir, record, results)
    write_html_report(exp, run_dir)


def write_html_report(exp: Experiment, run_dir: Path, always: bool = False) -> None:
    """report.html beside results.json at the end of a run (a second of work), with the run's
    provenance; kept where a finished run already has one (a campaign's is rewritten, `always`,
    as its results are after each experiment)."""
    from fedattack.report import REPORT_HTML, NotReportable, write_provenance, write_report
    from fedattack.training import resolve_device

    if (run_dir / REPORT_HTML).exists() and not always:
        return
    try:
        if not always:
            write_provenance(run_dir, str(resolve_device(exp.device)))
        typer.echo(f"report: {write_report(run_dir)}")
    except NotReportable:  # e.g. the GAN attack's records: no membership table to report
        pass
    except OSError as err:  # a read-only finished run: its results stand without a report
        typer.echo(f"note: no report.html written ({err.strerror}: {err.filename}); "
                   f"`fedattack report {run_dir}` writes one where it may", err=True)
    except Exception as err:  # noqa: BLE001 - the run's results stand; the report is extra
        typer.echo(f"warning: no report.html written ({type(err).__name__}: {err}); the "
                   f"results are in {run_dir}", err=True)


def report_run(exp: Experiment, run_dir: Path, record: dict, results: list[dict]) -> None:
    """The target model's last accuracies and the attack results of one finished run."""
    last = record["history"][-1]
    console = stdout()
    console.print(f"{exp.name}: target model train accuracy {last['train_accuracy']:.3f}, "
                  f"test accuracy {last['test_accuracy']:.3f}; run directory {run_dir}",
                  markup=False)
    if results:
        print_run(console, results)
    warn_undertrained(results)


@app.command()
def download(
    dataset: str = typer.Argument(..., help="a real dataset's name, e.g. cifar10"),
    root: Path = typer.Option(None, "--root", help="data folder (default: $FEDATTACK_DATA or "
                              "~/.cache/fedattack)"),
) -> None:
    """Fetch a real dataset's files from its public URLs.

    Needs a network connection; the files go where `fedattack run` looks for them.
    """
    import urllib.error

    from fedattack.data import data_root, dataset_names
    from fedattack.data import download as fetch

    if dataset not in dataset_names():
        fail(f"unknown dataset {dataset!r}; accepted: {', '.join(dataset_names())}")
    try:
        folder = fetch(dataset, root)
    except ValueError as err:  # no URL: generated locally, or an offline package ships it
        fail(str(err))
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
        fail(f"cannot download {dataset} ({reason}); this machine may be offline: fetch the "
             f"files elsewhere and put them in {data_root(root) / dataset}")
    typer.echo(f"ok: {dataset} downloaded into {folder}")


@app.command("deploy-local")
def deploy_local(
    config: Path = typer.Argument(..., help="federated experiment YAML"),
    out: Path = typer.Option(None, "--out", help="run directory (default: runs/ and the "
                             "experiment's name)"),
    auth: bool = typer.Option(False, "--auth", help="admit only SuperNodes with registered keys"),
    timeout: float = typer.Option(3600.0, "--timeout", help="seconds the run may take"),
) -> None:
    """Run a federated experiment through a local Flower deployment.

    A real deployment on 127.0.0.1 with TLS (SuperLink, SuperExecs, one SuperNode per
    participant); the run is then attacked offline.
    """
    from fedattack.deploy import AppMismatch, DeployError, check_deployable, deploy_experiment
    from fedattack.runner import progress_bar

    with interrupting_signals() as interruption:
        try:
            exp = load_config(config)
            if isinstance(exp, CampaignPlan):
                fail(f"{config} is a campaign; deploy-local runs one experiment")
            check_deployable(exp)  # before the lock creates the run directory
            preflight_all(exp, config)
            run_dir = out or child_dir("runs", exp.name)
            # the progress bar follows the rounds the ServerApp logs
            with exclusive(run_dir), progress_bar(exp, True) as advance:
                record, results = deploy_experiment(exp, run_dir, auth=auth, timeout_s=timeout,
                                                    on_round=advance)
        except (*user_errors(), AppMismatch) as err:
            fail(str(err))
        except OSError as err:
            fail_on_os_error(err)
        except DeployError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            exit_interrupted(interruption)
    report_run(exp, run_dir, record, results)


@app.command()
def invert(
    run_dir: Path = typer.Argument(..., help="a finished federated run directory"),
    attack: list[str] = typer.Option(None, "--attack", help="reconstruction attack (dlg, idlg, "
                                     "inverting-gradients); may be repeated"),
    victim: list[int] = typer.Option(None, "--victim", help="participant to attack (default: "
                                     "all); may be repeated"),
    rounds: list[int] = typer.Option(None, "--round", help="round whose update is attacked "
                                     "(default: the first recorded); may be repeated"),
    iterations: int = typer.Option(None, "--iterations", help="every attack's iterations"),
    restarts: int = typer.Option(None, "--restarts", help="Inverting Gradients' restarts"),
) -> None:
    """Reconstruct participants' training records from the aggregator's recorded view (gradient
    inversion); results and figures under RUN_DIR/inversion/."""
    from fedattack.inversion.stage import RESULT_COLUMNS, invert_run, settings_of

    try:
        rows = invert_run(run_dir, settings_of(attack, victim, rounds, iterations, restarts))
    except user_errors() as err:
        fail(str(err))
    except ValueError as err:
        fail(f"{run_dir}: {err}")
    typer.echo(markdown_table(rows, RESULT_COLUMNS))


@app.command()
def clean(
    run_dir: Path = typer.Argument(..., help="a run directory, or a campaign's"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what would go, remove nothing"),
) -> None:
    """Remove the feature caches of finished runs.

    Results, figures, splits and snapshots are kept; a cache is rebuilt from the snapshots if
    ever needed.
    """
    from fedattack.cleanup import clean_caches

    try:
        removed, skipped = clean_caches(run_dir, dry_run)
    except FileNotFoundError as err:
        fail(str(err))
    except OSError as err:  # a read-only run directory
        fail(f"cannot remove the cache in {err.filename} ({err.strerror}): make it writable and "
             "run the same command again")
    verb = "would remove" if dry_run else "removed"
    for item in removed:
        typer.echo(f"{verb} {item.path} ({item.bytes / 1e6:.1f} MB)")
    for run in skipped:
        typer.echo(f"kept the cache of {run}: its attack has not finished")
    total = sum(item.bytes for item in removed) / 1e6
    typer.echo(f"{verb} {len(removed)} cache folder(s), {total:.1f} MB")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
) -> None:
    """Write report.html, one self-contained page an auditor can hand on, and
    records-at-risk.csv beside the run's results.json.

    The page holds the strongest attack's leakage with its interval, the threat model, the
    results, the figures, the global model's accuracy per round, the records ranked most at
    risk and the run's provenance.
    """
    from fedattack.report import NotReportable, write_report

    try:
        path = write_report(run_dir)
    except (NotReportable, *user_errors()) as err:
        fail(str(err))
    except OSError as err:
        fail_on_os_error(err)
    typer.echo(f"report: {path}")


@app.command("list")
def list_available() -> None:
    """Name the datasets, models, attacks, strategies and defences."""
    from rich.padding import Padding
    from rich.table import Table

    from fedattack.catalogue import catalogue

    console = stdout()
    for section in catalogue():
        console.print(f"[bold]{section.title}[/bold]"
                      + (f" ({section.key})" if section.key else ""))
        if any(what for _, what in section.rows):
            body = Table.grid(padding=(0, 2))
            body.add_column(no_wrap=True)
            body.add_column()
            for name, what in section.rows:
                body.add_row(name, what)
        else:
            body = ", ".join(name for name, _ in section.rows)
        console.print(Padding(body, (0, 0, 0, 2)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
