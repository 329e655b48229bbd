"""The `softprompt` command line. Each command group lives in its own `_cli_*.py` module."""

from __future__ import annotations

import os

import click
import typer
import typer.main

# Prompt artifacts are a few KB: MLflow's per-download progress bars would only clutter the output
# (also in the Ray workers and Serve replicas, which inherit this environment).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from . import _cli_common, _cli_data, _cli_demo, _cli_ensemble, _cli_model, _cli_search, _cli_serve, _cli_train

app = typer.Typer(
    help="Prompt tuning as a service: search campaigns, voted soft-prompt ensembles, serving.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
    cls=_cli_common.OneLineErrors)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"softprompt {version('softprompt')}")
        raise typer.Exit()


@app.callback()
def _options(
    verbose: bool = typer.Option(False, "--verbose", "-v", envvar="SOFTPROMPT_VERBOSE",
                                 help="Show Ray's own log lines and the workers' output here "
                                      "(otherwise they stay in /tmp/ray/session_latest/logs)."),
    debug: bool = typer.Option(False, "--debug", envvar=_cli_common.DEBUG_ENV,
                               help="Show the traceback of an error (otherwise: one line)."),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Prompt tuning as a service: search campaigns, voted soft-prompt ensembles, serving."""
    if debug:
        os.environ[_cli_common.DEBUG_ENV] = "1"      # also for child processes
    if verbose:
        os.environ["SOFTPROMPT_VERBOSE"] = "1"   # read where Ray starts, also in child processes
    else:   # only our own lines: no MLflow INFO (database creation), no Tune configuration box or hints
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # a campaign saves Tune's state at every evaluation by design: no advice to save less often
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


app.add_typer(_cli_model.app, name="model")
app.add_typer(_cli_data.app, name="data")
app.add_typer(_cli_search.app, name="search")
app.add_typer(_cli_ensemble.app, name="ensemble")
app.command("train")(_cli_train.train)
app.command("demo")(_cli_demo.demo)
app.command("evaluate")(_cli_train.evaluate)
app.command("explain")(_cli_train.explain)
app.command("serve")(_cli_serve.serve)


_METAVARS = {"str": "TEXT", "int": "INTEGER", "int range": "INTEGER", "float": "FLOAT",
             "float range": "FLOAT", "path": "PATH", "file": "FILE", "directory": "DIRECTORY"}


def conventional(command: click.Command) -> click.Command:
    """`command` with click's metavars (`TEXT`, `INTEGER`, `NAME`) where typer shows `<str>`,
    `<int>` or `{name}`, so usage and help read like click's, mlflow's and ray's."""
    for param in command.params:
        if param.param_type_name == "argument":
            name = (param.metavar or param.name.upper()) + ("..." if param.nargs != 1 else "")
            usage = name if param.required else f"[{name}]"
            param.get_usage_pieces = lambda ctx, usage=usage: [usage]   # typer writes {NAME} and [[NAME]...]...
            param.display_type_rich = lambda ctx: None                 # and "NAME <str>" in the help
        elif param.metavar is None and not getattr(param, "is_flag", False):
            shown = param.display_type(click.Context(command)).strip("<>")
            param.metavar = _METAVARS.get(shown.removeprefix("list[").removesuffix("]"), shown.upper())
    for sub in getattr(command, "commands", {}).values():
        conventional(sub)
    return command


def main() -> None:  # pragma: no cover - console entry point
    conventional(typer.main.get_command(app))(prog_name="softprompt")


if __name__ == "__main__":  # pragma: no cover
    main()
