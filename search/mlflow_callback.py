"""The Tune callback that makes every MLflow write of a campaign, in the driver.

Trials never open the tracking store: their results reach the driver, and this callback logs them.
So an SQLite store is written by one process only, and a trial needs no database access.

Life of a trial's run (see `softprompt.store.trials` for names):
  on_trial_start     create the run (params, tags), or find it again by its trial-id tag when the
                     trial is retried or the campaign resumed — never a second run per trial;
  on_trial_result    log the evaluation (skipping steps the store has: a resumed trial may repeat
                     a step) and, at a restart, `restored_from_step`;
  on_trial_complete  log `best_*` and the prompt artifact; end FINISHED when the trial trained all
                     its steps, KILLED when the scheduler stopped it early (Tune 2.60 signals a
                     scheduler stop with `on_trial_complete` too, after a result marked done);
  on_trial_error     the final failure (retries go to on_trial_recover): best/prompt, end FAILED;
  on_experiment_end  end anything of this campaign still RUNNING, so no run is left RUNNING.

When the store fails (the store's own retries exhausted), the campaign goes on: the trial is
recorded as pending in `mlflow-pending.json` beside the campaign, and its run is completed later
from Tune's own records of the trial (`result.json`, its checkpoint) — when it ends, when the
campaign ends, or on `resume`. Nothing is lost, no run stays RUNNING once the store answers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback
from ray.tune.experiment import Trial

from softprompt.core.tasks import get_task
from softprompt.store import Store, names
from softprompt.store.uris import without_passwords

from .space import train_config
from .state import PENDING_FILE, write_json_atomically
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


def trial_results(trial: Trial) -> list[dict]:
    """Every result Tune recorded for the trial (its `result.json`), in order."""
    for folder in (trial.local_path, trial.path):
        path = Path(folder or "") / "result.json"
        if folder and path.is_file():
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [trial.last_result] if trial.last_result else []


class MlflowTrackingCallback(Callback):
    """Logs a campaign's trials to MLflow from the driver.

    Args:
      store: the store (its experiment created beforehand with `Store.prepare_experiment`).
      campaign: the campaign's name, also its experiment's name.
      model_fingerprint: the frozen model's fingerprint, a tag of every run.
      folder: the campaign folder (where trials whose writes failed are listed).
    """

    def __init__(self, store: Store, *, campaign: str, model_fingerprint: str, folder: str | Path) -> None:
        self.store = store
        self.campaign = campaign
        self.model_fingerprint = model_fingerprint
        self.folder = Path(folder)
        self._runs: dict[str, str] = {}          # trial id -> run id
        self._logged: dict[str, set[int]] = {}   # run id -> steps whose evaluation the store has
        self._restores: dict[str, int] = {}      # run id -> last restore step logged
        self._nodes: dict[str, str] = {}         # run id -> Ray node id last tagged
        self._failing = False                    # a write failed past the store's retries (said once)

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into the experiment state; caches are rebuilt from the store after a resume.
        return {"store": self.store, "campaign": self.campaign, "model_fingerprint": self.model_fingerprint,
                "folder": str(self.folder)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], campaign=state["campaign"], model_fingerprint=state["model_fingerprint"],
                      folder=state["folder"])

    # Pending trials ----------------------------------------------------------------------------

    def pending(self) -> set[str]:
        try:
            return set(json.loads((self.folder / PENDING_FILE).read_text()))
        except (OSError, ValueError):
            return set()

    def _set_pending(self, trial_ids: set[str]) -> None:
        if trial_ids or (self.folder / PENDING_FILE).exists():
            write_json_atomically(self.folder / PENDING_FILE, sorted(trial_ids))

    def _safely(self, trial: Trial, action: Callable[[], None]) -> bool:
        """Runs a store write; on failure the trial becomes pending (completed later). Returns success."""
        try:
            action()
        except Exception as error:  # noqa: BLE001 - the store failed past its retries: keep the campaign going
            if not self._failing:   # once per outage: the store layer has already said it is away
                logger.warning("MLflow writes fail (%s: %s); the trials go on, their records wait in %s and are "
                               "completed when the store answers, or by `softprompt search resume %s`",
                               type(error).__name__, without_passwords(str(error).splitlines()[0][:200])
                               if str(error) else "", PENDING_FILE, self.campaign)
            self._failing = True
            self._set_pending(self.pending() | {trial.trial_id})
            return False
        self._failing = False
        return True

    # Tune's hooks ------------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._safely(trial, lambda: self.store.set_status(self._run_id(trial), names.RUNNING))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        self._safely(trial, lambda: self._log_result(trial, result))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._complete(trial, final_status(trial))

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._complete(trial, names.FAILED)

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        live = {trial.trial_id: trial for trial in trials}
        for trial_id in self.pending():
            trial = live.get(trial_id)
            if trial is not None and trial.status in (Trial.TERMINATED, Trial.ERROR):
                self._complete(trial, final_status(trial))
        def end_running() -> None:
            for run in self.store.trial_runs(self.campaign, status=names.RUNNING):
                trial = live.get(run.tags.get(names.TAG_TRIAL_ID))
                if trial is not None and trial.status in (Trial.TERMINATED, Trial.ERROR):
                    self._close(trial, final_status(trial))
                elif trial is None:  # a run whose trial this experiment no longer knows
                    self.store.end_run(run.run_id, names.KILLED)
        try:
            end_running()
        except Exception as error:  # noqa: BLE001 - the pending list keeps what `resume` must finish
            logger.warning("could not end the campaign's RUNNING runs (%s); `resume` completes them", error)

    # Writes ------------------------------------------------------------------------------------

    def _run_id(self, trial: Trial) -> str:
        if trial.trial_id not in self._runs:
            config = train_config(trial.config)
            run_id = self.store.start_trial_run(
                self.campaign, trial_id=trial.trial_id, run_name=str(trial), config=config.to_dict(),
                task_name=get_task(config.task).name, model_fingerprint=self.model_fingerprint)
            self._runs[trial.trial_id] = run_id
            self._logged[run_id] = {step for step, _ in self.store.metric_history(run_id, names.METRIC_SCORE)}
            restores = self.store.metric_history(run_id, names.METRIC_RESTORED_FROM)
            self._restores[run_id] = max((step for step, _ in restores), default=0)
        return self._runs[trial.trial_id]

    def _log_result(self, trial: Trial, result: dict) -> None:
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
        if step in self._logged[run_id]:
            return
        self.store.log_evaluation(run_id, step=step, loss=result["loss"], score=result["score"],
                                  metrics=result.get("task_metrics", {}))
        self._logged[run_id].add(step)

    def _complete(self, trial: Trial, status: str) -> None:
        """Closes the trial's run; a pending trial first catches up from Tune's records."""
        def catch_up_and_close() -> None:
            if trial.trial_id in self.pending():
                for result in trial_results(trial):
                    self._log_result(trial, result)
            self._close(trial, status)
        if self._safely(trial, catch_up_and_close):
            self._set_pending(self.pending() - {trial.trial_id})

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
