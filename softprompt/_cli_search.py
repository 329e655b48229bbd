"""`softprompt search launch | resume | status`: prompt-tuning campaigns on Ray Tune.

A campaign lives in `<storage-path>/<name>/` (default storage path `./runs`, or the campaign
file's `storage_path`); its trials are tracked in MLflow (`MLFLOW_TRACKING_URI` when set, else
`<storage-path>/mlflow.db`). Each command prints the trial table on stderr and one JSON line on
stdout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ._cli_common import print_json, user_errors

app = typer.Typer(help="Prompt-tuning campaigns over the paper's Table 6 on Ray Tune, tracked in MLflow.",
                  no_args_is_help=True)

STORAGE_HELP = "Folder holding campaigns [default: the campaign file's storage_path, else ./runs]."


def _show(rows, *, title: str) -> None:
    from rich.console import Console

    from softprompt.search.report import trial_table

    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 200  # a log file: keep each trial on one line
    console.print(trial_table(rows, title=title))


def _summary(rows) -> dict:
    states = sorted({row.status for row in rows})
    return {"trials": len(rows), "states": {state: sum(row.status == state for row in rows) for state in states},
            "best_score": max((row.best_score for row in rows if not math.isnan(row.best_score)), default=None)}


def _print_result(result) -> None:
    _show(result.rows, title=result.name)
    print_json({"campaign": result.name, "experiment_dir": str(result.experiment_dir),
                "tracking_uri": result.tracking_uri, "curves": str(result.curves)} | _summary(result.rows))


def _build_ensembles(campaign, result) -> None:
    """A campaign with `ensemble: {top: N}` registers each task's top-N ensemble when it ends
    (done here, in the shell, so that search/ never depends on ensemble/)."""
    if campaign.ensemble is None:
        return
    from mlflow.tracking import MlflowClient

    from softprompt.ensemble.build import build_ensemble

    client = MlflowClient(result.tracking_uri)
    for task in campaign.tasks:
        registered = build_ensemble(client, task=task, top=campaign.ensemble.top, experiments=[campaign.name],
                                    name=f"{Path(task).stem}-ensemble")
        print_json({"ensemble": registered.name, "version": registered.version, "alias": "production",
                    "members": [m.run_id for m in registered.manifest.members]})


@app.command()
def launch(campaign_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Campaign YAML file."),
           name: Optional[str] = typer.Option(None, help="Campaign name [default: the `name` in the file]."),
           storage_path: Optional[Path] = typer.Option(None, help=STORAGE_HELP)) -> None:
    """Start a campaign and run it to the end."""
    from softprompt.search import launch as launching
    from softprompt.search.campaign import load_campaign

    with user_errors():
        campaign = load_campaign(campaign_file, name=name,
                                 storage_path=str(storage_path) if storage_path else None)
        result = launching.launch(campaign)
    _print_result(result)
    with user_errors():
        _build_ensembles(campaign, result)


@app.command()
def resume(name: str = typer.Argument(..., help="Campaign name."),
           storage_path: Path = typer.Option(Path("./runs"), help="Folder holding campaigns.")) -> None:
    """Continue a campaign whose driver stopped (unfinished and errored trials resume)."""
    from softprompt.search import launch as launching

    with user_errors():
        result = launching.resume(name, storage_path=storage_path)
    _print_result(result)
    with user_errors():
        _build_ensembles(launching.stored_campaign(name, storage_path=storage_path), result)


@app.command()
def status(name: str = typer.Argument(..., help="Campaign name."),
           storage_path: Path = typer.Option(Path("./runs"), help="Folder holding campaigns.")) -> None:
    """The campaign's trials: configuration, state, best score, steps."""
    from softprompt.search import launch as launching

    with user_errors():
        rows = launching.status(name, storage_path=storage_path)
    _show(rows, title=name)
    print_json({"campaign": name} | _summary(rows))
