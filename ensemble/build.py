"""Auto-building an ensemble: the top-N finished trials of a task, by their best validation metric.

Eligible runs: trial runs (not ensemble builds) tagged with the task, ended FINISHED or KILLED
(a trial stopped early by the scheduler still has its best prompt), holding `best_<metric>`, all
on one model fingerprint (that of the best run unless one is given). Ties on the metric are
broken by the run's start time, then its id — so the same store always gives the same ensemble.
"""

from __future__ import annotations

import tempfile
from typing import Sequence

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from softprompt.core.prompts import TENSOR_FILE
from softprompt.core.tasks import get_task
from softprompt.tracking import (KIND_ENSEMBLE, PROMPT_ARTIFACT_PATH, TAG_KIND, TAG_MODEL, TAG_MODEL_FINGERPRINT,
                                 TAG_TASK)

from .manifest import EnsembleError, EnsembleManifest, Member
from .registry import RegisteredEnsemble, fetch_prompt, file_sha256, register

ENDED = ("FINISHED", "KILLED")
ENSEMBLE_EXPERIMENT = "ensembles"


def _experiment_ids(client: MlflowClient, names: Sequence[str] | None) -> list[str]:
    if not names:
        return [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    ids = []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise EnsembleError(f"no MLflow experiment named {name!r}")
        ids.append(experiment.experiment_id)
    return ids


def default_metric(task_name: str) -> str:
    """The task's selection metric: its primary metric, else `score` (the mean of its metrics)."""
    task = get_task(task_name)
    if task.primary_metric:
        return task.primary_metric
    return task.metrics[0] if len(task.metrics) == 1 else "score"


def target_format(run: Run) -> str:
    """How the run's prompt was trained to format targets (runs from before the param: plain)."""
    return run.data.params.get("target_format", "plain")


def eligible_runs(client: MlflowClient, *, task: str, metric: str, experiments: Sequence[str] | None = None,
                  fingerprint: str | None = None) -> list[Run]:
    """Trial runs of `task` that can join an ensemble, best first (stable order): those of the best
    run's model fingerprint (or `fingerprint`) and target format."""
    runs = client.search_runs(_experiment_ids(client, experiments), filter_string=f"tags.`{TAG_TASK}` = '{task}'",
                              run_view_type=ViewType.ACTIVE_ONLY, max_results=5000)
    key = f"best_{metric}"
    runs = [r for r in runs if r.info.status in ENDED and key in r.data.metrics
            and r.data.tags.get(TAG_KIND) != KIND_ENSEMBLE and TAG_MODEL_FINGERPRINT in r.data.tags]
    runs.sort(key=lambda r: (-r.data.metrics[key], r.info.start_time or 0, r.info.run_id))
    if runs and fingerprint is None:
        fingerprint = runs[0].data.tags[TAG_MODEL_FINGERPRINT]
    runs = [r for r in runs if r.data.tags[TAG_MODEL_FINGERPRINT] == fingerprint]
    return [r for r in runs if target_format(r) == target_format(runs[0])]


def _member(client: MlflowClient, run: Run, metric: str, folder: str) -> Member:
    uri = f"{run.info.artifact_uri}/{PROMPT_ARTIFACT_PATH}"
    try:
        path = fetch_prompt(client, uri, f"{folder}/{run.info.run_id}")
    except Exception as error:  # noqa: BLE001 - any store failure means: this run has no usable prompt
        raise EnsembleError(f"run {run.info.run_id}: no prompt artifact at {uri} ({error})") from error
    return Member(run.info.run_id, uri, file_sha256(path / TENSOR_FILE), float(run.data.metrics[f"best_{metric}"]))


def build_ensemble(client: MlflowClient, *, task: str, top: int, name: str | None = None,
                   experiments: Sequence[str] | None = None, metric: str | None = None,
                   alias: str | None = "production", vote_rule: str = "majority",
                   allow_fewer: bool = False) -> RegisteredEnsemble:
    """Selects the top-`top` runs of `task` and registers them as a new ensemble version."""
    if top < 1:
        raise EnsembleError(f"--top must be >= 1, got {top}")
    metric = metric or default_metric(task)
    runs = eligible_runs(client, task=task, metric=metric, experiments=experiments)
    if len(runs) < top and not (allow_fewer and runs):
        raise EnsembleError(f"only {len(runs)} eligible run(s) for task {task!r} with best_{metric} "
                            f"(need {top}; pass --allow-fewer to build a smaller ensemble)")
    chosen = runs[:top]
    with tempfile.TemporaryDirectory() as folder:
        members = tuple(_member(client, run, metric, folder) for run in chosen)
    first = chosen[0]
    manifest = EnsembleManifest(name=name or f"{task}-ensemble", task=task, model=first.data.tags.get(TAG_MODEL, ""),
                                model_fingerprint=first.data.tags[TAG_MODEL_FINGERPRINT], metric=metric,
                                members=members, vote_rule=vote_rule, target_format=target_format(first))
    return register(client, manifest, experiment_id=first.info.experiment_id, alias=alias)
