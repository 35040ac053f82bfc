"""The `fedattack` command: run and validate experiment files."""

from __future__ import annotations

from pathlib import Path

import typer

from fedattack.config import ConfigError, load_experiment

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fedattack: federated-learning privacy attacks on Flower.")

USAGE_ERROR = 2


def fail(message: str) -> None:
    """One line on stderr, exit code 2, no traceback: for anything the user can fix."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(USAGE_ERROR)


def user_errors():
    """The exceptions that mean bad input, not a bug."""
    from fedattack.data import DatasetUnavailable

    return (ConfigError, DatasetUnavailable, FileExistsError)


@app.command()
def validate(config: Path = typer.Argument(..., help="experiment YAML")) -> None:
    """Check an experiment file without running it."""
    try:
        exp = load_experiment(config)
    except ConfigError as err:
        fail(str(err))
    typer.echo(f"ok: {config} is a valid {exp.scenario} experiment {exp.name!r}")


@app.command()
def run(
    config: Path = typer.Argument(..., help="experiment YAML"),
    out: Path = typer.Option(None, "--out", help="run directory (default: runs/<name>)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress display"),
    verbose: bool = typer.Option(False, "--verbose", help="show Flower and Ray logs"),
) -> None:
    """Run an experiment: train the target model and record what each attacker observes."""
    from fedattack.runner import run_experiment

    try:
        exp = load_experiment(config)
        run_dir = out or Path("runs") / exp.name
        record, results = run_experiment(exp, run_dir, show_progress=not quiet,
                                         verbose=verbose)
    except user_errors() as err:
        fail(str(err))
    except ValueError as err:  # e.g. a dataset too small for the requested split sizes
        fail(str(err))
    last = record["history"][-1]
    typer.echo(f"{exp.name}: target model train accuracy {last['train_accuracy']:.3f}, "
               f"test accuracy {last['test_accuracy']:.3f}; run directory {run_dir}")
    if results:
        from fedattack.reporting import markdown_table

        typer.echo(markdown_table(results))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
