"""`softprompt search launch | resume | extend | status`: prompt-tuning campaigns on Ray Tune.

A campaign lives in `<store>/<name>/` (`--store DIR`, default `./runs`, or the campaign file's
`storage_path`); its trials are tracked in MLflow (`--store URI`, else `$MLFLOW_TRACKING_URI`, else
`<store>/mlflow.db`). Each command prints the trial table on stderr and one JSON line on stdout.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from ._cli_common import campaign_store, print_json, storage_path_of, store_option, user_errors
from .pipeline import campaign_ensembles

app = typer.Typer(help="Prompt-tuning campaigns over the paper's Table 6 on Ray Tune, tracked in MLflow.",
                  no_args_is_help=True, rich_markup_mode=None)

def _console():
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 80   # a log file reads in 80 columns
    return console


def _show(rows, baselines=(), *, title: str) -> None:
    """The trial table and, when the campaign has them, its designed prompts on stderr."""
    from rich.table import Table

    from softprompt.search.report import trial_table

    console = _console()
    console.print(trial_table(rows, title=title))
    if baselines:
        designed = Table("designed prompt", "task", "score", title="designed prompts (same validation examples)")
        for baseline in baselines:
            designed.add_row(baseline.name, baseline.task, f"{baseline.score:.2f}")
        console.print(designed)


def _summary(rows, baselines=()) -> dict:
    states = sorted({row.status for row in rows})
    summary = {"trials": len(rows), "states": {state: sum(row.status == state for row in rows) for state in states},
               "best_score": max((row.best_score for row in rows if not math.isnan(row.best_score)), default=None)}
    if baselines:
        summary["best_designed"] = {"name": baselines[0].name, "score": baselines[0].score}
    return summary


def _result_json(result) -> dict:
    from softprompt.store import masked

    return {"campaign": result.name, "experiment_dir": str(result.experiment_dir),
            "tracking_uri": masked(result.tracking_uri), "curves": str(result.curves)} | _summary(
        result.rows, result.baselines)


def _finish(campaign, result) -> None:
    """The trial table on stderr, ensembles built (once per campaign), then ONE JSON line on
    stdout; exit status 1 when every trial failed."""
    _show(result.rows, result.baselines, title=result.name)
    with user_errors():
        ensembles = campaign_ensembles(campaign, result)
    print_json(_result_json(result) | ({"ensembles": ensembles} if ensembles else {}))
    if result.all_failed:
        typer.echo(f"error: every trial of campaign {result.name!r} failed; their errors are in "
                   f"{result.experiment_dir}", err=True)
        raise typer.Exit(code=1)


@app.command()
def launch(campaign_file: Path = typer.Argument(..., exists=True, dir_okay=False, metavar="CAMPAIGN_FILE",
                                                help="Campaign YAML file."),
           name: Optional[str] = typer.Option(None, help="Campaign name [default: the file's name]."),
           store: Optional[str] = store_option()) -> None:
    """Start a campaign and run it to the end."""
    from softprompt.search import launch as launching
    from softprompt.search.campaign import load_campaign
    from softprompt.store.uris import is_uri, parse_store

    with user_errors():
        storage_path, tracking_uri = parse_store(store) if store else (None, None)
        campaign = load_campaign(campaign_file, name=name, tracking_uri=tracking_uri,
                                 storage_path=None if store and is_uri(store) else storage_path)
        result = launching.launch(campaign)
    _finish(campaign, result)


@app.command()
def resume(name: str = typer.Argument(..., metavar="NAME", help="Campaign name."),
           store: Optional[str] = store_option()) -> None:
    """Continue a campaign whose driver stopped (unfinished and errored trials resume)."""
    from softprompt.search import launch as launching

    storage_path = storage_path_of(store)
    with user_errors():
        result = launching.resume(name, storage_path=storage_path)
    _finish(launching.stored_campaign(name, storage_path=storage_path).campaign, result)


@app.command()
def extend(name: str = typer.Argument(..., metavar="NAME", help="Campaign name."),
           trials: int = typer.Option(..., min=1, help="More trials (a multiple of tasks x seeds)."),
           store: Optional[str] = store_option()) -> None:
    """Run N more trials of an ended campaign, its searcher told the earlier scores."""
    from softprompt.search import launch as launching
    from softprompt.search.extend import extend as extending

    storage_path = storage_path_of(store)
    with user_errors():
        result = extending(name, trials, storage_path=storage_path)
    campaign = launching.stored_campaign(name, storage_path=storage_path).campaign
    _show(result.rows, result.baselines, title=name)
    with user_errors():
        ensembles = campaign_ensembles(campaign, result, rebuild=True)   # over every trial (guarded if asked)
    print_json(_result_json(result) | {"extensions": _extensions(result.experiment_dir)}
               | ({"ensembles": ensembles} if ensembles else {}))


def _extensions(folder) -> list[dict]:
    from softprompt.search.extend import extensions_summary

    return extensions_summary(folder)


@app.command()
def status(name: str = typer.Argument(..., metavar="NAME", help="Campaign name."),
           store: Optional[str] = store_option()) -> None:
    """The campaign's trials: configuration, state, best score, steps."""
    from softprompt.search import launch as launching

    storage_path = storage_path_of(store)
    with user_errors():
        rows, baselines = launching.status(name, storage_path=storage_path)
    _show(rows, baselines, title=name)
    extensions = _extensions(launching.experiment_dir(name, storage_path))
    print_json({"campaign": name} | _summary(rows, baselines) | ({"extensions": extensions} if extensions else {}))


@app.command()
def report(name: str = typer.Argument(..., metavar="NAME", help="Campaign name (its MLflow experiment)."),
           by: Optional[str] = typer.Option(None, "--by", help="The axis: a trial param (prompt_length, init, "
                                                               "seed)."),
           html: Optional[Path] = typer.Option(None, "--html", metavar="FILE",
                                               help="Write one static page instead (trials, curves, Table 3)."),
           metric: str = typer.Option("score", help="Plot best_<metric> (score: the selection score)."),
           out: Optional[Path] = typer.Option(None, help="Folder for the PNG and CSV [default: the campaign's]."),
           store: Optional[str] = store_option()) -> None:
    """A metric against one axis: mean and standard deviation over seeds, beside the designed prompts
    (PNG + CSV, logged to the campaign's experiment)."""
    from rich.table import Table

    from softprompt.search import launch as launching
    from softprompt.search.findings import report_axis

    if html is not None:
        from softprompt.search.html_report import write_html_report

        with user_errors():
            page = write_html_report(name, html, folder=launching.experiment_dir(name, storage_path_of(store)))
        print_json({"campaign": name, "html": str(page)})
        return
    if by is None:
        typer.echo("error: give --by AXIS (a metric against one axis) or --html FILE (the campaign page)", err=True)
        raise typer.Exit(code=2)
    with user_errors():
        result = report_axis(campaign_store(name, store), name, by, metric=metric,
                             folder=out or launching.experiment_dir(name, storage_path_of(store)))
    view = Table(by, f"best {metric} (mean)", "std", "trials", title=f"{name}: best validation {metric} by {by}")
    for point in result.points:
        view.add_row(point.value, f"{point.mean:.2f}", f"{point.std:.2f}", str(len(point.values)))
    for baseline in result.baselines:
        view.add_row(f"designed: {baseline.name}", f"{baseline.score:.2f}", "", "", style="dim")
    _console().print(view)
    print_json({"campaign": name, "by": by, "metric": metric, "picture": str(result.picture),
                "table": str(result.table),
                "points": [{"value": p.value, "mean": p.mean, "std": p.std, "values": list(p.values)}
                           for p in result.points],
                "designed": [{"name": b.name, "score": b.score} for b in result.baselines]})
