"""`softprompt ensemble build|evaluate`: voted ensembles of the best prompts of a task."""

from __future__ import annotations

from typing import List, Optional

import typer

from ._cli_common import print_json, user_errors

app = typer.Typer(help="Build and evaluate voted prompt ensembles.", no_args_is_help=True)

TRACKING_HELP = "MLflow tracking URI [default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db]."


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    from softprompt.search.campaign import DEFAULT_STORAGE_PATH
    from softprompt.tracking import resolve_tracking_uri

    return MlflowClient(resolve_tracking_uri(tracking_uri, storage_path=DEFAULT_STORAGE_PATH))


@app.command("build")
def build(task: str = typer.Option(..., help="The task whose trials to draw from."),
          top: int = typer.Option(5, min=1, help="How many prompts (N)."),
          experiment: Optional[List[str]] = typer.Option(None, help="Campaign (experiment) names [default: all]."),
          metric: Optional[str] = typer.Option(None, help="Selection metric [default: the task's]."),
          name: Optional[str] = typer.Option(None, help="Registered model name [default: <task>-ensemble]."),
          alias: str = typer.Option("production", help="Alias moved to the new version."),
          vote_rule: str = typer.Option("majority", help="majority | mean_logprob"),
          allow_fewer: bool = typer.Option(False, help="Build a smaller ensemble when fewer runs qualify."),
          tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP)) -> None:
    """Select the top-N finished runs of a task and register them as an ensemble version."""
    from softprompt.ensemble.build import build_ensemble

    with user_errors():
        registered = build_ensemble(_client(tracking_uri), task=task, top=top, name=name, experiments=experiment,
                                    metric=metric, alias=alias, vote_rule=vote_rule, allow_fewer=allow_fewer)
    manifest = registered.manifest
    print_json({"name": registered.name, "version": registered.version, "alias": alias, "task": manifest.task,
                "metric": manifest.metric, "model_fingerprint": manifest.model_fingerprint,
                "members": [{"run_id": m.run_id, manifest.metric: m.metric} for m in manifest.members]})


@app.command("evaluate")
def evaluate(reference: str = typer.Argument(..., help="NAME, NAME@ALIAS or NAME/VERSION."),
             split: str = typer.Option("validation"),
             max_examples: Optional[int] = typer.Option(None, min=1),
             data_dir: Optional[str] = typer.Option(None),
             model: Optional[str] = typer.Option(None, help="[default: the ensemble's model]"),
             tracking_uri: Optional[str] = typer.Option(None, help=TRACKING_HELP)) -> None:
    """Score each member, their average, the best member and the voted ensemble (Table 3)."""
    from softprompt.ensemble.report import evaluate_and_log

    with user_errors():
        table = evaluate_and_log(_client(tracking_uri), reference, split=split, max_examples=max_examples,
                                 data_dir=data_dir, model=model)
    print_json(table.as_dict())
