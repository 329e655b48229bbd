"""`softprompt demo`: search, ensemble and serve on this machine (see `softprompt.demo`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._cli_common import print_json, user_errors


def demo(quick: bool = typer.Option(False, help="t5-tiny-random in a couple of minutes."),
         storage_path: Path = typer.Option(Path("runs/demo"), "--store", metavar="DIR",
                                           help="Folder for the campaign, MLflow store and PNGs.")) -> None:
    """Run a search campaign on SST-2 (designed prompts beside it), build a greedy voted ensemble,
    serve it over HTTP and ask it a few real sentences; prints a final summary and the verdict
    (ensemble vs best tuned prompt vs best designed prompt), then shuts everything down."""
    from softprompt.demo import run_demo, summary_json

    with user_errors():
        summary = run_demo(quick=quick, storage_path=storage_path)
    print_json(summary_json(summary))
