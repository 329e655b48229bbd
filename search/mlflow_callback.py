"""The Tune callback that makes every MLflow write of a campaign, in the driver.

Trials never open the tracking store: their results reach the driver, and this callback logs them.
So an SQLite store is written by one process only, and a trial needs no database access.

Life of a trial's run (see `softprompt.store.trials` for names):
  on_trial_start     create the run (params, tags), or find it again by its trial-id tag when the
                     trial is retried or the campaign resumed — never a second run per trial;
  on_trial_result    log the evaluation (skipping steps already logged: a resumed trial may repeat
                     a step the store already has) and, at a restart, `restored_from_step`;
  on_trial_complete  log `best_*` and the prompt artifact; end FINISHED when the trial trained all
                     its steps, KILLED when the scheduler stopped it early (Tune 2.60 signals a
                     scheduler stop with `on_trial_complete` too, after a result marked done);
  on_trial_error     the final failure (retries go to on_trial_recover): best/prompt, end FAILED;
  on_experiment_end  end anything of this campaign still RUNNING, so no run is left RUNNING.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from softprompt.core.tasks import get_task
from softprompt.store import Store
from softprompt.store import names

from .space import train_config
from .trainable import BEST_PROMPT

logger = logging.getLogger(__name__)


def final_status(trial: Trial) -> str:
    """FINISHED when the trial trained all its steps, KILLED when it was stopped before, FAILED
    when it errored."""
    if trial.status == Trial.ERROR:
        return names.FAILED
    result = trial.last_result or {}
    steps = result.get("steps") or trial.config.get("steps")
    done = steps is not None and result.get("step", 0) >= steps
    return names.FINISHED if done else names.KILLED


class MlflowTrackingCallback(Callback):
    """Logs a campaign's trials to MLflow from the driver.

    Args:
      store: the store (its experiment created beforehand with `Store.prepare_experiment`).
      campaign: the campaign's name, also its experiment's name.
      model_fingerprint: the frozen model's fingerprint, a tag of every run.
    """

    def __init__(self, store: Store, *, campaign: str, model_fingerprint: str) -> None:
        self.store = store
        self.campaign = campaign
        self.model_fingerprint = model_fingerprint
        self._runs: dict[str, str] = {}          # trial id -> run id
        self._logged: dict[str, int] = {}        # run id -> last step logged
        self._restores: dict[str, int] = {}      # run id -> last restore step logged
        self._nodes: dict[str, str] = {}         # run id -> Ray node id last tagged

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into the experiment state; caches are rebuilt from the store after a resume.
        return {"store": self.store, "campaign": self.campaign, "model_fingerprint": self.model_fingerprint}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], campaign=state["campaign"], model_fingerprint=state["model_fingerprint"])

    def _run_id(self, trial: Trial) -> str:
        if trial.trial_id not in self._runs:
            config = train_config(trial.config)
            run_id = self.store.start_trial_run(
                self.campaign, trial_id=trial.trial_id, run_name=str(trial), config=config.to_dict(),
                task_name=get_task(config.task).name, model_fingerprint=self.model_fingerprint)
            self._runs[trial.trial_id] = run_id
            self._logged[run_id] = self.store.last_logged_step(run_id)
            restores = self.store.metric_history(run_id, names.METRIC_RESTORED_FROM)
            self._restores[run_id] = max((step for step, _ in restores), default=0)
        return self._runs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        run_id = self._run_id(trial)
        self.store.set_status(run_id, names.RUNNING)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        if "step" not in result or "score" not in result:
            return
        run_id = self._run_id(trial)
        node = result.get("node_id")
        if node and self._nodes.get(run_id) != node:  # where the trial runs (it may move on a restart)
            self.store.set_tag(run_id, names.TAG_NODE_ID, node)
            self._nodes[run_id] = node
        step = int(result["step"])
        start = int(result.get("start_step", 0))
        if start > self._restores[run_id]:
            self.store.log_metrics(run_id, {names.METRIC_RESTORED_FROM: start}, step=start)
            self._restores[run_id] = start
        if step <= self._logged[run_id]:
            return
        self.store.log_evaluation(run_id, step=step, loss=result["loss"], score=result["score"],
                                     metrics=result.get("task_metrics", {}))
        self._logged[run_id] = step

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._close(trial, final_status(trial))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._close(trial, names.FAILED)

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        live = {trial.trial_id: trial for trial in trials}
        for run in self.store.trial_runs(self.campaign, status=names.RUNNING):
            trial = live.get(run.tags.get(names.TAG_TRIAL_ID))
            if trial is not None and trial.status in (Trial.TERMINATED, Trial.ERROR):
                self._close(trial, final_status(trial))
            elif trial is None:  # a run whose trial this experiment no longer knows
                self.store.end_run(run.run_id, names.KILLED)

    def _close(self, trial: Trial, status: str) -> None:
        run_id = self._run_id(trial)
        try:
            self.store.log_best(run_id)
            self._log_prompt(trial, run_id)
        finally:
            self.store.end_run(run_id, status)

    def _log_prompt(self, trial: Trial, run_id: str) -> None:
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            prompt = Path(folder) / BEST_PROMPT
            if prompt.is_dir():
                self.store.log_prompt(run_id, prompt)
            else:
                logger.warning("trial %s: its checkpoint holds no prompt artifact", trial)
