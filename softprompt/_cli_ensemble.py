"""`softprompt ensemble build|evaluate|similar`: voted ensembles of the best prompts of a task."""

from __future__ import annotations

from typing import List, Optional

import typer

from ._cli_common import (DEFAULT_MODEL, MODEL_HELP, campaign_store, open_store, print_json, store_option,
                          user_errors)
from .pipeline import build_summary, promote

app = typer.Typer(help="Build and evaluate voted prompt ensembles.",
                  no_args_is_help=True, rich_markup_mode=None)

REFERENCE_HELP = "NAME, NAME@ALIAS or NAME:VERSION (a bare NAME is NAME@production)."


@app.command("build")
def build(task: str = typer.Option(..., help="The task whose trials to draw from."),
          top: int = typer.Option(5, min=1, help="Most votes in the ensemble (with repeats)."),
          experiment: Optional[List[str]] = typer.Option(
              None, metavar="CAMPAIGN", help="Campaigns to draw from (repeatable) [default: all]."),
          metric: Optional[str] = typer.Option(None, help="Selection metric [default: the task's]."),
          name: Optional[str] = typer.Option(None, help="Registered name [default: TASK-ensemble]."),
          alias: str = typer.Option("production", help="Alias moved to the new version."),
          select: str = typer.Option("greedy", help="greedy (forward selection) | top (the top N)."),
          selection_split: Optional[str] = typer.Option(
              None, metavar="SPLIT", help="Split to select on, e.g. 'validation[500:]' "
                                          "[default: the trials' held-out records]."),
          max_examples: Optional[int] = typer.Option(None, min=1, help="Select on at most N examples."),
          data_dir: Optional[str] = typer.Option(None, help="Data folder [default: the trials']."),
          vote: str = typer.Option("majority", "--vote",
                                   help="majority | soft | mean_logprob | learned (see docs/campaigns.md)."),
          allow_fewer: bool = typer.Option(False, help="Build a smaller ensemble if fewer runs qualify."),
          promote_if_better: bool = typer.Option(False, help="Move the alias only if the new version beats "
                                                             "its version (paired test)."),
          promote_max_p: float = typer.Option(0.05, min=0.0, max=1.0, help="Most p-value a promotion accepts."),
          store: Optional[str] = store_option()) -> None:
    """Choose members among a task's finished trials and register them as an ensemble version."""
    from softprompt.ensemble.build import build_ensemble

    with user_errors():
        source = campaign_store(experiment[0] if experiment and len(experiment) == 1 else None, store)
        registered = build_ensemble(source, task=task, top=top, name=name, experiments=experiment,
                                    metric=metric, alias=None if promote_if_better else alias, vote_rule=vote,
                                    allow_fewer=allow_fewer, select=select, selection_split=selection_split,
                                    selection_limit=max_examples, data_dir=data_dir)
        if not promote_if_better:
            print_json(build_summary(registered, alias))
            return
        promotion = promote(source, registered, alias=alias, max_p=promote_max_p, selection_split=selection_split,
                            selection_examples=max_examples, data_dir=data_dir)
    print_json(build_summary(registered, alias if promotion["promoted"] else None) | {"promotion": promotion})


@app.command("evaluate")
def evaluate(reference: str = typer.Argument(..., metavar="ENSEMBLE", help=REFERENCE_HELP),
             split: str = typer.Option("validation", help="Split to report on, e.g. 'validation[:500]'."),
             max_examples: Optional[int] = typer.Option(None, min=1, help="Report on the first N examples."),
             data_dir: Optional[str] = typer.Option(None, help="Data folder [default: the shipped data]."),
             model: Optional[str] = typer.Option(None, help="Frozen model [default: the ensemble's]."),
             designed: bool = typer.Option(True, help="Score the campaigns' designed prompts too."),
             store: Optional[str] = store_option()) -> None:
    """Score each member, their average, the best member and the voted ensemble (Table 3)."""
    from softprompt.ensemble.report import evaluate_and_log

    with user_errors():
        table = evaluate_and_log(open_store(store), reference, split=split, max_examples=max_examples,
                                 data_dir=data_dir, model=model, designed=designed)
    print_json(table.as_dict())


@app.command("similar")
def similar(task: str = typer.Option(..., help="The target task (a classification task)."),
            model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
            alias: str = typer.Option("production", help="Compare the ensembles with this alias."),
            store: Optional[str] = store_option()) -> None:
    """Registered prompts ranked by similarity to a task (for --init-from; docs/campaigns.md)."""
    from rich.console import Console
    from rich.table import Table

    from softprompt.core.models import load_model
    from softprompt.ensemble.similar import rank_similar

    with user_errors():
        ranked, skipped = rank_similar(open_store(store), load_model(model), task, alias=alias)
    table = Table("ensemble", "version", "task", "member", "cosine", title=f"registered prompts nearest {task}")
    for neighbour in ranked:
        table.add_row(neighbour.reference, neighbour.version, neighbour.task, f"#{neighbour.member}",
                      f"{neighbour.cosine:.3f}")
    Console(stderr=True).print(table)
    print_json({"task": task, "model": model, "ranked": [n._asdict() for n in ranked], "skipped": skipped})
