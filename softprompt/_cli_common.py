"""Helpers shared by the command-line modules: the one store flag, JSON output, clean error exits.

Every error reaches the user as ONE line on stderr, never a traceback (unless `--debug`, or
$SOFTPROMPT_DEBUG, asks for it):

- what the user can fix (a bad argument or file, an unreachable or refusing store, a damaged
  artifact: ValueError, LookupError, OSError, the store's MLflow/SQLAlchemy errors) -> exit 2;
- anything else (a bug, a crashed worker) -> its type and first line, exit 1.

`user_errors()` does this around a command's work; `OneLineErrors`, the top-level command
group, does it for whatever escapes a command. Passwords in URIs are masked in every message.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Iterator

import click
import typer
from typer.core import TyperGroup

DEBUG_ENV = "SOFTPROMPT_DEBUG"
DEBUG_HINT = "--debug shows the traceback"


DEFAULT_MODEL = "gemma3-270m"
MODEL_HELP = "Built-in (gemma3-270m, smollm2-135m, t5-tiny-random), .gguf or HF folder."
DTYPE_HELP = "Frozen weights: float32 | bfloat16 | auto (bfloat16 where native)."
DATA_DIR_HELP = "Data folder [default: $SOFTPROMPT_DATA_DIR, else the shipped data]."
STORE_HELP = "Runs folder or MLflow URI [default: $MLFLOW_TRACKING_URI, else ./runs]."


def store_option():
    """`--store DIR|URI`: where campaigns, runs and ensembles live, the same flag on every command."""
    return typer.Option(None, "--store", metavar="DIR|URI", help=STORE_HELP)


def open_store(store: str | None):
    """The MLflow store `--store` names (see `softprompt.store.uris.parse_store`)."""
    from softprompt.store import Store
    from softprompt.store.uris import parse_store

    storage_path, tracking_uri = parse_store(store)
    return Store.at(tracking_uri, storage_path=storage_path)


def storage_path_of(store: str | None) -> str:
    """The folder holding campaign folders for `--store`."""
    from softprompt.store.uris import parse_store

    return parse_store(store)[0]


def campaign_store(campaign: str | None, store: str | None):
    """The store of campaign `campaign` (the URI its folder under `--store` recorded), else the
    store `--store` names: what a campaign launched with `--store X` wrote, read with the same flag."""
    import os

    from softprompt.store import Store
    from softprompt.store.uris import is_uri, unmasked

    if campaign and not (store and is_uri(store)):
        from softprompt.search.launch import stored_tracking_uri

        recorded = stored_tracking_uri(campaign, storage_path=storage_path_of(store))
        if recorded:
            return Store(unmasked(recorded, os.environ.get("MLFLOW_TRACKING_URI")))
    return open_store(store)


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout (scripts read the last line)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def debugging(context: click.Context | None = None) -> bool:
    """Whether `--debug` (or $SOFTPROMPT_DEBUG) asked for tracebacks."""
    context = context or click.get_current_context(silent=True)
    if context is not None and context.find_root().params.get("debug"):
        return True
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _input_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean: the input, a file or the store is wrong (exit 2)."""
    types: tuple[type[BaseException], ...] = (ValueError, LookupError, OSError)
    if "softprompt.store" in sys.modules or "mlflow" in sys.modules:   # only then can a store error occur
        from softprompt.store.resilience import store_error_types

        types += store_error_types()
    try:
        import yaml

        types += (yaml.YAMLError,)
    except ImportError:   # pragma: no cover - yaml is a dependency
        pass
    return types


def one_line(error: BaseException) -> str:
    """The first line of what `error` says (MLflow's message, a KeyError's key), passwords masked."""
    from softprompt.store.uris import without_passwords

    text = getattr(error, "message", None) if type(error).__module__.startswith("mlflow") else None
    if text is None:
        text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return without_passwords(lines[0] if lines else type(error).__name__)


_FLAGS = {"max_eval_examples": "--max-examples"}   # TrainConfig fields whose flag has another name


def exit_for(error: Exception) -> typer.Exit:
    """Prints `error` as one line on stderr; the Exit to raise (2: input, 1: anything else)."""
    from softprompt.core.config import ConfigError

    if isinstance(error, ConfigError):   # in the command line's words: the flag, not the config field
        flag = _FLAGS.get(error.field, "--" + error.field.replace("_", "-"))
        typer.echo(f"error: {flag} {error.detail}", err=True)
        return typer.Exit(code=2)
    if isinstance(error, _input_error_types()):
        typer.echo(f"error: {one_line(error)}", err=True)
        return typer.Exit(code=2)
    typer.echo(f"error: {type(error).__name__}: {one_line(error)} ({DEBUG_HINT})", err=True)
    return typer.Exit(code=1)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turns the library's input errors (a bad argument, a missing file, an unreachable store, a
    damaged artifact) into a one-line message on stderr and exit status 2, instead of a traceback;
    with `--debug` they propagate as they are."""
    try:
        yield
    except _input_error_types() as error:
        if debugging():
            raise
        raise exit_for(error) from error


class OneLineErrors(TyperGroup):
    """The top-level group: an exception escaping any command becomes one line (see the module doc)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                typer.Exit, typer.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - the last place a traceback could reach the user
            if debugging(ctx):
                raise
            raise exit_for(error) from error
