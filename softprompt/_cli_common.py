"""Helpers shared by the command-line modules: the one store flag, JSON output, clean error exits."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Iterator

import typer


DEFAULT_MODEL = "gemma3-270m"
MODEL_HELP = "Built-in name (gemma3-270m, t5-tiny-random), .gguf file or HF folder."
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


_FLAGS = {"max_eval_examples": "--max-examples"}   # TrainConfig fields whose flag has another name


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's input errors (ValueError/KeyError subclasses) into a one-line message
    on stderr and exit status 2, instead of a traceback."""
    from softprompt.core.config import ConfigError

    try:
        yield
    except ConfigError as error:   # in the command line's words: the flag, not the config field
        flag = _FLAGS.get(error.field, "--" + error.field.replace("_", "-"))
        typer.echo(f"error: {flag} {error.detail}", err=True)
        raise typer.Exit(code=2) from error
    except (ValueError, LookupError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2) from error
