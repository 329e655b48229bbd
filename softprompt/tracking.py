"""The one module that talks to MLflow: where runs live, what they are called, how they are read.

Shared by `search` (writes a run per trial), `ensemble` (reads the best runs) and `serve`
(downloads prompt artifacts). Everything goes through `mlflow.tracking.MlflowClient`; no
global fluent state (`mlflow.start_run`) is touched, so one process can talk to several stores.

Where (see `resolve_tracking_uri`):
  explicit URI > `MLFLOW_TRACKING_URI` > `sqlite:///<storage_path>/mlflow.db`, with artifacts under
  `<storage_path>/mlartifacts` whenever the store is a database (SQLite or PostgreSQL ...); a
  tracking server (`http(s)://`) keeps its own artifact root.

What, per campaign:
  - one experiment, named after the campaign;
  - one run per trial, tagged `softprompt.kind=trial`, `softprompt.campaign`, `softprompt.trial_id`,
    `softprompt.task`, `softprompt.model`, `softprompt.model_fingerprint`, `softprompt.node_id`;
    params = the full `TrainConfig.to_dict()` (None logged as "None");
    metrics at every evaluation, step = training step: `loss`, `score` and each task metric under its
    own name (`accuracy`, `f1`, ...); at the end `best_<metric>` (the best value of that metric's
    history), `best_score` and `best_step` (the step of the selected prompt);
    artifact `prompt/` = `prompt.safetensors` + `prompt.json` of the selected prompt;
  - one campaign run (`softprompt.kind=campaign`) holding campaign-wide artifacts (curves, table).

Writes are made by ONE process (the campaign driver), so an SQLite store is never written by many
processes at once; `prepare_experiment` creates the database and the experiment before any trial.

Example:
    >>> tracking = Tracking(resolve_tracking_uri(storage_path="runs"), artifact_root="runs/mlartifacts")
    >>> runs = tracking.trial_runs("tiny-rte")                       # doctest: +SKIP
    >>> tracking.download_prompt(runs[0].info.run_id, "/tmp/p")      # doctest: +SKIP
    PosixPath('/tmp/p/prompt')
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow.entities import Metric, Param, Run, ViewType
from mlflow.tracking import MlflowClient

# Tags.
TAG_KIND = "softprompt.kind"                     # "trial" | "campaign" | "ensemble" | "ensemble-eval"
TAG_CAMPAIGN = "softprompt.campaign"
TAG_TRIAL_ID = "softprompt.trial_id"
TAG_TASK = "softprompt.task"
TAG_MODEL = "softprompt.model"
TAG_MODEL_FINGERPRINT = "softprompt.model_fingerprint"
TAG_NODE_ID = "softprompt.node_id"               # the Ray node the trial last reported from
TAG_ENSEMBLE_TOP = "softprompt.ensemble_top"     # experiment tag: the campaign's `ensemble.top`
TAG_ENSEMBLE = "softprompt.ensemble"             # an ensemble evaluation run: `name/version`
KIND_TRIAL = "trial"
KIND_CAMPAIGN = "campaign"
KIND_ENSEMBLE = "ensemble"                       # the run holding an ensemble version's manifest
KIND_ENSEMBLE_EVAL = "ensemble-eval"

# Metrics.
METRIC_LOSS = "loss"
METRIC_SCORE = "score"
METRIC_RESTORED_FROM = "restored_from_step"      # logged at each restart of a trial from a checkpoint
BEST_PREFIX = "best_"
METRIC_BEST_STEP = "best_step"
METRIC_BEST_SCORE = BEST_PREFIX + METRIC_SCORE

# Artifacts.
PROMPT_ARTIFACT_PATH = "prompt"
DEFAULT_DATABASE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"

# Run states (MLflow's names).
RUNNING, FINISHED, KILLED, FAILED = "RUNNING", "FINISHED", "KILLED", "FAILED"


def resolve_tracking_uri(explicit: str | None = None, *, storage_path: str | os.PathLike) -> str:
    """The tracking URI: `explicit`, else `$MLFLOW_TRACKING_URI`, else an SQLite file under `storage_path`."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return "sqlite:///" + str(Path(storage_path).resolve() / DEFAULT_DATABASE)


def default_artifact_root(tracking_uri: str, *, storage_path: str | os.PathLike) -> str | None:
    """Where a new experiment's artifacts go: `<storage_path>/mlartifacts` for a database store; None
    (the server's own default) for a tracking server."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return None
    return (Path(storage_path).resolve() / DEFAULT_ARTIFACTS).as_uri()


def params_of(config: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params for a trial configuration: every value as a string, None as "None"."""
    return {key: "None" if value is None else str(value) for key, value in config.items()}


def _quoted(value: str) -> str:
    return "'" + str(value).replace("'", "\\'") + "'"


class Tracking:
    """A campaign's view of one MLflow store.

    Args:
      tracking_uri: the store (`sqlite:///...`, `postgresql+psycopg://...`, `http://...`).
      artifact_root: artifact location of experiments this object creates (a folder URI), or None.

    Picklable: only the URI and artifact root travel; the client is rebuilt on first use.
    """

    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "artifact_root": self.artifact_root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["tracking_uri"], artifact_root=state["artifact_root"])

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # Experiments -------------------------------------------------------------------------------

    def prepare_experiment(self, campaign: str, *, tags: Mapping[str, str] | None = None) -> str:
        """Creates the store (database migrations) and the campaign's experiment if missing, sets
        `tags` on it; returns its id. Call once, in the driver, before any trial starts."""
        experiment = self.client.get_experiment_by_name(campaign)
        if experiment is None:
            location = f"{self.artifact_root.rstrip('/')}/{campaign}" if self.artifact_root else None
            experiment_id = self.client.create_experiment(campaign, artifact_location=location,
                                                          tags={TAG_CAMPAIGN: campaign})
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment_id)
        for key, value in (tags or {}).items():
            self.client.set_experiment_tag(experiment_id, key, value)
        return experiment_id

    def experiment_id(self, campaign: str) -> str | None:
        experiment = self.client.get_experiment_by_name(campaign)
        return experiment.experiment_id if experiment is not None else None

    # Reading runs ------------------------------------------------------------------------------

    def _search(self, campaign: str, filters: Iterable[str]) -> list[Run]:
        experiment_id = self.experiment_id(campaign)
        if experiment_id is None:
            return []
        query = " and ".join(filters)
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs([experiment_id], query, ViewType.ACTIVE_ONLY,
                                           max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def trial_runs(self, campaign: str, *, task: str | None = None, status: str | None = None) -> list[Run]:
        """The campaign's trial runs (not its campaign run), optionally of one task or status."""
        filters = [f"tags.`{TAG_KIND}` = {_quoted(KIND_TRIAL)}"]
        if task is not None:
            filters.append(f"tags.`{TAG_TASK}` = {_quoted(task)}")
        if status is not None:
            filters.append(f"attributes.status = {_quoted(status)}")
        return self._search(campaign, filters)

    def find_trial_run(self, campaign: str, trial_id: str) -> Run | None:
        """The run of one Tune trial, if it has one (the oldest, should there be several)."""
        runs = self._search(campaign, [f"tags.`{TAG_TRIAL_ID}` = {_quoted(trial_id)}"])
        return min(runs, key=lambda run: run.info.start_time, default=None)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in step order."""
        history = self.client.get_metric_history(run_id, key)
        return sorted((m.step, m.value) for m in history)

    def download_prompt(self, run_id: str, dst: str | os.PathLike) -> Path:
        """Downloads a run's prompt artifact into `dst`; returns the folder holding
        `prompt.safetensors` + `prompt.json` (load it with `SoftPrompt.load`)."""
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, PROMPT_ARTIFACT_PATH, str(dst)))

    # Writing trial runs ------------------------------------------------------------------------

    def start_trial_run(self, campaign: str, *, trial_id: str, run_name: str, config: Mapping[str, Any],
                        model_fingerprint: str) -> str:
        """The run of a trial, created with params and tags on first call; later calls (a retried or
        resumed trial) find it by its trial-id tag and mark it RUNNING again. Returns the run id."""
        existing = self.find_trial_run(campaign, trial_id)
        if existing is not None:
            if existing.info.status != RUNNING:
                self.client.update_run(existing.info.run_id, status=RUNNING)
            return existing.info.run_id
        tags = {TAG_KIND: KIND_TRIAL, TAG_CAMPAIGN: campaign, TAG_TRIAL_ID: trial_id,
                TAG_TASK: str(config.get("task")), TAG_MODEL: str(config.get("model")),
                TAG_MODEL_FINGERPRINT: model_fingerprint}
        run = self.client.create_run(self.prepare_experiment(campaign), tags=tags, run_name=run_name)
        params = [Param(key, value) for key, value in params_of(config).items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def last_logged_step(self, run_id: str) -> int:
        """The last step whose evaluation is logged (0 when none)."""
        history = self.client.get_metric_history(run_id, METRIC_SCORE)
        return max((m.step for m in history), default=0)

    def log_evaluation(self, run_id: str, *, step: int, loss: float, score: float,
                       metrics: Mapping[str, float]) -> None:
        """One evaluation: `loss`, `score` and every task metric at `step`."""
        self.log_metrics(run_id, {METRIC_LOSS: loss, METRIC_SCORE: score, **metrics}, step=step)

    def log_metrics(self, run_id: str, values: Mapping[str, float], *, step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, int(step)) for key, value in values.items()
                 if value is not None and not math.isnan(float(value))]
        self.client.log_batch(run_id, metrics=batch)

    def log_best(self, run_id: str) -> dict[str, float]:
        """Logs `best_<metric>` (the maximum of each task metric's history and of `score`) and
        `best_step` (the first step with the best score); returns them."""
        run = self.client.get_run(run_id)
        names = [key for key in run.data.metrics
                 if key not in (METRIC_LOSS, METRIC_RESTORED_FROM, METRIC_BEST_STEP)
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

    def log_prompt(self, run_id: str, prompt_dir: str | os.PathLike) -> None:
        """Uploads a prompt artifact folder as the run's `prompt/` artifact."""
        self.client.log_artifacts(run_id, str(prompt_dir), PROMPT_ARTIFACT_PATH)

    def end_run(self, run_id: str, status: str) -> None:
        """Ends a run as FINISHED, KILLED or FAILED."""
        if status not in (FINISHED, KILLED, FAILED):
            raise ValueError(f"a run ends FINISHED, KILLED or FAILED, not {status!r}")
        self.client.set_terminated(run_id, status=status)

    # The campaign run --------------------------------------------------------------------------

    def log_campaign_artifacts(self, campaign: str, paths: Iterable[str | os.PathLike]) -> str:
        """Logs files as artifacts of the campaign's own run (created on first use); returns its id."""
        runs = self._search(campaign, [f"tags.`{TAG_KIND}` = {_quoted(KIND_CAMPAIGN)}"])
        if runs:
            run_id = runs[0].info.run_id
        else:
            run = self.client.create_run(self.prepare_experiment(campaign), run_name=f"{campaign} (campaign)",
                                         tags={TAG_KIND: KIND_CAMPAIGN, TAG_CAMPAIGN: campaign})
            run_id = run.info.run_id
        for path in paths:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status=FINISHED)
        return run_id


__all__ = [
    "BEST_PREFIX", "DEFAULT_ARTIFACTS", "DEFAULT_DATABASE", "FAILED", "FINISHED", "KILLED", "KIND_CAMPAIGN",
    "KIND_TRIAL", "METRIC_BEST_SCORE", "METRIC_BEST_STEP", "METRIC_LOSS", "METRIC_RESTORED_FROM", "METRIC_SCORE",
    "PROMPT_ARTIFACT_PATH", "RUNNING", "TAG_CAMPAIGN", "TAG_KIND", "TAG_MODEL",
    "TAG_ENSEMBLE_TOP", "TAG_MODEL_FINGERPRINT", "TAG_TASK", "TAG_TRIAL_ID", "Tracking", "default_artifact_root", "params_of",
    "resolve_tracking_uri",
]
