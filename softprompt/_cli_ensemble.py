"""`softprompt ensemble build|evaluate`: voted ensembles of the best prompts of a task."""

from __future__ import annotations

from typing import List, Optional

import typer

from ._cli_common import print_json, user_errors

app = typer.Typer(help="Build and evaluate voted prompt ensembles.", no_args_is_help=True)

TRACKING_HELP = "MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db]."


def _store(tracking_uri: str | None):
    from softprompt.store import Store

    return Store.at(tracking_uri)


@app.command("build")
def build(task: str = typer.Option(..., help="The task whose trials to draw from."),
          top: int = typer.Option(5, min=1, help="The most votes (members with multiplicity) of the ensemble."),
          experiment: Optional[List[str]] = typer.Option(None, help="Campaign (experiment) names [default: all]."),
          metric: Optional[str] = typer.Option(None, help="Selection metric [default: the task's]."),
          name: Optional[str] = typer.Option(None, help="Registered model name [default: <task>-ensemble]."),
          alias: str = typer.Option("production", help="Alias moved to the new version."),
          select: str = typer.Option("greedy", help="greedy: forward selection with replacement on the selection "
                                                    "split (never below its best member there) | top: the top N."),
          selection_split: Optional[str] = typer.Option(
              None, help="Split or slice greedy selection scores on, e.g. 'validation[500:]' [default: the "
                         "training records the trials held out (campaign fixed.selection_examples)]. Never records "
                         "you report on."),
          selection_examples: Optional[int] = typer.Option(None, min=1, help="Use at most this many selection examples."),
          data_dir: Optional[str] = typer.Option(None, help="Data folder for the selection split [default: the trials']."),
          vote: str = typer.Option("majority", "--vote", "--vote-rule",
                                   help="majority (weighted, ties to the likelier) | soft (mean label probability) "
                                        "| mean_logprob | learned (member weights and a per-label bias fitted "
                                        "on the selection split; with --select greedy)"),
          allow_fewer: bool = typer.Option(False, help="Build a smaller ensemble when fewer runs qualify."),
          promote_if_better: bool = typer.Option(False, help="Move the alias only if the new version beats the "
                                                             "alias's version on the selection split (paired test)."),
          promote_max_p: float = typer.Option(0.05, min=0.0, max=1.0, help="The paired test's p-value a promotion "
                                                                           "needs at most."),
          tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP)) -> None:
    """Choose members among a task's finished trials and register them as an ensemble version."""
    from softprompt.ensemble.build import build_ensemble

    with user_errors():
        store = _store(tracking_uri)
        registered = build_ensemble(store, task=task, top=top, name=name, experiments=experiment,
                                    metric=metric, alias=None if promote_if_better else alias, vote_rule=vote,
                                    allow_fewer=allow_fewer, select=select, selection_split=selection_split,
                                    selection_limit=selection_examples, data_dir=data_dir)
        if not promote_if_better:
            print_json(build_summary(registered, alias))
            return
        promotion = promote(store, registered, alias=alias, max_p=promote_max_p, selection_split=selection_split,
                            selection_examples=selection_examples, data_dir=data_dir)
    print_json(build_summary(registered, alias if promotion["promoted"] else None) | {"promotion": promotion})


def promote(store, registered, *, alias: str, max_p: float, selection_split: str | None = None,
            selection_examples: int | None = None, data_dir: str | None = None) -> dict:
    """The guarded promotion of a just-built version (`ensemble.promote`): one line on stderr
    saying what happened and why; returns the figures."""
    from softprompt.ensemble.build import SelectionSplit
    from softprompt.ensemble.promote import promote_if_better

    split = SelectionSplit(selection_split, None, data_dir) if selection_split else None
    promotion = promote_if_better(store, registered, alias=alias, max_p=max_p, split=split, limit=selection_examples,
                                  data_dir=data_dir)
    typer.echo(promotion.line(), err=True)
    return promotion.as_dict()


def build_summary(registered, alias: str | None) -> dict:
    """What `ensemble build` prints: the version, its members with their votes, and the selection."""
    manifest = registered.manifest
    selection = {key: value for key, value in (manifest.selection or {}).items() if key != "candidates"}
    return {"name": registered.name, "version": registered.version, "alias": alias, "task": manifest.task,
            "metric": manifest.metric, "model_fingerprint": manifest.model_fingerprint, "vote": manifest.vote_rule,
            "selection": selection, **({"pool": manifest.pool} if manifest.pool else {}),
            "members": [{"run_id": m.run_id, manifest.metric: m.metric, "votes": m.multiplicity}
                        for m in manifest.members]}


@app.command("evaluate")
def evaluate(reference: str = typer.Argument(..., help="NAME, NAME@ALIAS or NAME/VERSION."),
             split: str = typer.Option("validation", help="Split or slice to report on, e.g. 'validation[:500]'."),
             max_examples: Optional[int] = typer.Option(None, min=1, help="Report on the split's first N examples."),
             data_dir: Optional[str] = typer.Option(None),
             model: Optional[str] = typer.Option(None, help="[default: the ensemble's model]"),
             designed: bool = typer.Option(True, help="Score the members' campaigns' designed prompts alongside."),
             tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP)) -> None:
    """Score each member, their average, the best member and the voted ensemble (Table 3)."""
    from softprompt.ensemble.report import evaluate_and_log

    with user_errors():
        table = evaluate_and_log(_store(tracking_uri), reference, split=split, max_examples=max_examples,
                                 data_dir=data_dir, model=model, designed=designed)
    print_json(table.as_dict())
