"""`ensemble evaluate` end to end: load a registered ensemble, score it (Table 3), print the
table, and log it to MLflow (metrics, JSON and a PNG) on a run beside the ensemble's build."""

from __future__ import annotations

import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from softprompt.core.models import load_model
from softprompt.core.tasks import get_task
from softprompt.tracking import KIND_ENSEMBLE_EVAL, TAG_ENSEMBLE, TAG_KIND, TAG_TASK

from .evaluate import Table3, evaluate_ensemble
from .loaded import load_ensemble
from .registry import resolve


def render_table3(table: Table3, *, title: str) -> Table:
    """The paper's Table 3 layout as a rich table."""
    view = Table("prompt", table.metric, title=title)
    for number, (run_id, value) in enumerate(table.members):
        view.add_row(f"member {number} ({run_id[:8]})", f"{value:.2f}")
    view.add_row("average", f"{table.average:.2f}", style="dim")
    view.add_row("best member", f"{table.best:.2f}", style="dim")
    view.add_row(f"ensemble ({len(table.members)}, voted)", f"{table.ensemble:.2f}", style="bold")
    return view


def plot_table3(table: Table3, path: Path, *, title: str) -> Path:
    """A bar chart of the members, their average, the best and the ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"m{n}" for n in range(len(table.members))] + ["avg", "best", "ensemble"]
    values = [v for _, v in table.members] + [table.average, table.best, table.ensemble]
    colours = ["#9bb"] * len(table.members) + ["#777", "#555", "#c53"]
    figure, axis = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 3.2))
    axis.bar(labels, values, color=colours)
    axis.set_ylabel(table.metric)
    axis.set_ylim(max(0.0, min(values) - 10), min(100.0, max(values) + 5))
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def evaluate_and_log(client: MlflowClient, reference: str, *, split: str = "validation",
                     max_examples: int | None = None, data_dir: str | None = None,
                     model: str | None = None, console: Console | None = None,
                     picture_dir: str | Path | None = None) -> Table3:
    """Evaluates the ensemble `reference` names; prints and logs the Table 3 layout (and writes
    its PNG into `picture_dir` when given)."""
    registered = resolve(client, reference)
    manifest = registered.manifest
    frozen = load_model(model or manifest.model)
    ensemble = load_ensemble(client, reference, frozen)
    task = get_task(manifest.task)
    table = evaluate_ensemble(frozen, ensemble, task, task.examples(split, data_dir=data_dir, limit=max_examples))
    title = f"{registered.name} v{registered.version} on {task.name} {split} ({table.examples} examples)"
    (console or Console(stderr=True)).print(render_table3(table, title=title))
    build_run = client.get_model_version(registered.name, registered.version).run_id
    experiment_id = client.get_run(build_run).info.experiment_id
    run = client.create_run(experiment_id, run_name=f"{registered.name}-v{registered.version}-eval",
                            tags={TAG_KIND: KIND_ENSEMBLE_EVAL, TAG_TASK: task.name,
                                  TAG_ENSEMBLE: f"{registered.name}/{registered.version}"})
    run_id = run.info.run_id
    for number, (_, value) in enumerate(table.members):
        client.log_metric(run_id, f"member_{number}_{table.metric}", value)
    for key in ("average", "best", "ensemble"):
        client.log_metric(run_id, f"{key}_{table.metric}", getattr(table, key))
    client.log_dict(run_id, table.as_dict(), "table3.json")
    with tempfile.TemporaryDirectory() as folder:
        picture = plot_table3(table, Path(picture_dir or folder) / "table3.png", title=title)
        client.log_artifact(run_id, str(picture))
    client.set_terminated(run_id, "FINISHED")
    return table
