"""Helpers shared by the command-line modules: JSON output and clean error exits."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, Iterator

import typer


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout (scripts read the last line)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn the library's input errors (ValueError/KeyError subclasses) into a one-line message
    on stderr and exit status 2, instead of a traceback."""
    try:
        yield
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code=2) from error
