"""A campaign's runs: one run per Tune trial, written by the campaign driver only.

Per campaign (experiment named after it):
  - one run per trial, tagged kind=trial, campaign, trial id, task (its own name), task source
    (what the campaign named), model, model fingerprint, node id; params = the full
    `TrainConfig.to_dict()` (None logged as "None"); metrics at every evaluation, step = the
    training step: `loss`, `score` and each task metric under its own name; at the end
    `best_<metric>`, `best_score` and `best_step`; artifact `prompt/` = the selected prompt;
  - one run per designed text prompt and task (kind=baseline): params template, shots, seed;
    the task's metrics and `score` on the same validation examples as the trials;
  - one campaign run (kind=campaign) holding campaign-wide artifacts (table, curves, reports).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow.entities import Metric, Param

from .client import RunRecord, StoreBase, quoted
from .names import (BEST_PREFIX, ENDED, FAILED, FINISHED, KILLED, KIND_BASELINE, KIND_CAMPAIGN, KIND_TRIAL,
                    METRIC_BEST_SCORE, METRIC_BEST_STEP, METRIC_LOSS, METRIC_RESTORED_FROM, METRIC_SCORE, RUNNING,
                    TAG_BASELINE, TAG_CAMPAIGN, TAG_KIND, TAG_MODEL, TAG_MODEL_FINGERPRINT, TAG_TASK, TAG_TASK_SOURCE,
                    TAG_TRIAL_ID)


def params_of(config: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params for a trial configuration: every value as a string, None as "None"."""
    return {key: "None" if value is None else str(value) for key, value in config.items()}


class TrialRuns(StoreBase):
    """Reading and writing the runs of campaigns (a part of `Store`; see the module doc)."""

    # Reading -----------------------------------------------------------------------------------

    def trial_runs(self, campaign: str, *, task: str | None = None, status: str | None = None) -> list[RunRecord]:
        """The campaign's trial runs (not its campaign run), optionally of one task or status."""
        filters = [f"tags.`{TAG_KIND}` = {quoted(KIND_TRIAL)}"]
        if task is not None:
            filters.append(f"tags.`{TAG_TASK}` = {quoted(task)}")
        if status is not None:
            filters.append(f"attributes.status = {quoted(status)}")
        return self.runs_of(campaign, filters)

    def ended_trial_runs(self, task: str, *, experiments: list[str] | None = None) -> list[RunRecord]:
        """Trial runs of `task` (its name or the path a campaign named it by) that ended with a
        prompt (FINISHED, or KILLED by the scheduler), in the named experiments or all."""
        ids = self.experiment_ids(experiments)
        runs: dict[str, RunRecord] = {}
        for tag in (TAG_TASK, TAG_TASK_SOURCE):
            for run in self.search_runs(ids, [f"tags.`{TAG_KIND}` = {quoted(KIND_TRIAL)}",
                                              f"tags.`{tag}` = {quoted(task)}"]):
                if run.status in ENDED:
                    runs[run.run_id] = run
        return sorted(runs.values(), key=lambda run: (run.start_time, run.run_id))

    def find_trial_run(self, campaign: str, trial_id: str) -> RunRecord | None:
        """The run of one Tune trial, if it has one (the oldest, should there be several)."""
        runs = self.runs_of(campaign, [f"tags.`{TAG_TRIAL_ID}` = {quoted(trial_id)}"])
        return min(runs, key=lambda run: run.start_time, default=None)

    # Writing -----------------------------------------------------------------------------------

    def start_trial_run(self, campaign: str, *, trial_id: str, run_name: str, config: Mapping[str, Any],
                        task_name: str, model_fingerprint: str) -> str:
        """The run of a trial, created with params and tags on first call; later calls (a retried or
        resumed trial) find it by its trial-id tag and mark it RUNNING again. Returns the run id."""
        existing = self.find_trial_run(campaign, trial_id)
        if existing is not None:
            if existing.status != RUNNING:
                self.set_status(existing.run_id, RUNNING)
            return existing.run_id
        tags = {TAG_KIND: KIND_TRIAL, TAG_CAMPAIGN: campaign, TAG_TRIAL_ID: trial_id, TAG_TASK: task_name,
                TAG_TASK_SOURCE: str(config.get("task")), TAG_MODEL: str(config.get("model")),
                TAG_MODEL_FINGERPRINT: model_fingerprint}
        run = self.client.create_run(self.prepare_experiment(campaign), tags=tags, run_name=run_name)
        params = [Param(key, value) for key, value in params_of(config).items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def log_evaluation(self, run_id: str, *, step: int, loss: float, score: float,
                       metrics: Mapping[str, float]) -> None:
        """One evaluation: `loss`, `score` and every task metric at `step`."""
        self.log_metrics(run_id, {METRIC_LOSS: loss, METRIC_SCORE: score, **metrics}, step=step)

    def log_metrics(self, run_id: str, values: Mapping[str, float], *, step: int = 0) -> None:
        """Metrics at `step`; None and NaN values are left out."""
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, int(step)) for key, value in values.items()
                 if value is not None and not math.isnan(float(value))]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def log_best(self, run_id: str) -> dict[str, float]:
        """Logs `best_<metric>` (the maximum of each task metric's history and of `score`) and
        `best_step` (the first step with the best score); returns them."""
        run = self.get_run(run_id)
        names = [key for key in run.metrics if key not in (METRIC_LOSS, METRIC_RESTORED_FROM, METRIC_BEST_STEP)
                 and not key.startswith(BEST_PREFIX)]
        best: dict[str, float] = {}
        for name in names:
            history = self.metric_history(run_id, name)
            if history:
                best[BEST_PREFIX + name] = max(value for _, value in history)
                if name == METRIC_SCORE:
                    best[METRIC_BEST_STEP] = min(step for step, value in history
                                                 if value == best[METRIC_BEST_SCORE])
        if best:
            self.log_metrics(run_id, best, step=int(best.get(METRIC_BEST_STEP, 0)))
        return best

    def end_run(self, run_id: str, status: str) -> None:
        """Ends a run as FINISHED, KILLED or FAILED."""
        if status not in (FINISHED, KILLED, FAILED):
            raise ValueError(f"a run ends FINISHED, KILLED or FAILED, not {status!r}")
        self.client.set_terminated(run_id, status=status)

    def log_baseline(self, campaign: str, *, name: str, task: str, params: Mapping[str, Any],
                     metrics: Mapping[str, float]) -> str:
        """A finished run holding one designed prompt's scores on `task`; returns its id."""
        run = self.client.create_run(self.prepare_experiment(campaign), run_name=f"designed: {name}",
                                     tags={TAG_KIND: KIND_BASELINE, TAG_CAMPAIGN: campaign, TAG_BASELINE: name,
                                           TAG_TASK: task})
        self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params_of(params).items()])
        self.log_metrics(run.info.run_id, metrics)
        self.end_run(run.info.run_id, FINISHED)
        return run.info.run_id

    def baseline_runs(self, experiment_ids: list[str], *, task: str | None = None) -> list[RunRecord]:
        """The designed-prompt runs of the experiments (optionally of one task), oldest first."""
        filters = [f"tags.`{TAG_KIND}` = {quoted(KIND_BASELINE)}"]
        if task is not None:
            filters.append(f"tags.`{TAG_TASK}` = {quoted(task)}")
        return self.search_runs(experiment_ids, filters)

    def log_campaign_artifacts(self, campaign: str, paths: Iterable[str | os.PathLike]) -> str:
        """Logs files as artifacts of the campaign's own run (created on first use); returns its id."""
        runs = self.runs_of(campaign, [f"tags.`{TAG_KIND}` = {quoted(KIND_CAMPAIGN)}"])
        if runs:
            run_id = runs[0].run_id
        else:
            run = self.client.create_run(self.prepare_experiment(campaign), run_name=f"{campaign} (campaign)",
                                         tags={TAG_KIND: KIND_CAMPAIGN, TAG_CAMPAIGN: campaign})
            run_id = run.info.run_id
        for path in paths:
            self.client.log_artifact(run_id, str(Path(path)))
        self.client.set_terminated(run_id, status=FINISHED)
        return run_id
