"""The store's campaign runs and the driver-side MLflow callback, driven with stand-in trials (no cluster)."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from softprompt.store import Store, default_artifact_root, names, resolve_tracking_uri
from softprompt.store.trials import params_of
from softprompt.core.prompts import SoftPrompt
from softprompt.search.mlflow_callback import MlflowTrackingCallback, final_status
from softprompt.search.trainable import BEST_PROMPT

CONFIG = {"task": "rte", "model": "t5-tiny-random", "learning_rate": 0.3, "steps": 8, "decay_factor": None,
          "steps_per_decay": 4000, "batch_size": 4, "eval_every": 4, "seed": 0}


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = Store(uri, artifact_root=(tmp_path / "artifacts").as_uri())
    store.prepare_experiment("c")
    return store


class FakeTrial(types.SimpleNamespace):
    """What the callback reads of a Tune trial."""

    def __str__(self) -> str:
        return f"run_trial_{self.trial_id}"


def make_trial(trial_id: str, *, status="RUNNING", checkpoint=None, **last):
    return FakeTrial(trial_id=trial_id, config=dict(CONFIG), status=status, last_result=last, checkpoint=checkpoint)


def result(step: int, score: float, *, start: int = 0) -> dict:
    return {"step": step, "steps": 8, "start_step": start, "loss": 1.0 / step, "score": score,
            "task_metrics": {"accuracy": score}}


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(storage_path=tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert resolve_tracking_uri(storage_path=tmp_path) == "sqlite:////elsewhere.db"
    assert resolve_tracking_uri("postgresql://x/y", storage_path=tmp_path) == "postgresql://x/y"
    assert default_artifact_root("http://mlflow:5000", storage_path=tmp_path) is None
    assert default_artifact_root("sqlite:///a.db", storage_path=tmp_path) == (
        tmp_path / "mlartifacts").as_uri()
    assert params_of({"a": None, "b": 0.5}) == {"a": "None", "b": "0.5"}


def test_a_trial_has_one_run_across_restarts_and_ends_finished(tracking, tmp_path):
    prompt_dir = tmp_path / "checkpoint" / BEST_PROMPT
    SoftPrompt(np.ones((4, 8), np.float32), "f" * 64, task="rte").save(prompt_dir)
    from ray.tune import Checkpoint

    trial = make_trial("t1", checkpoint=Checkpoint.from_directory(str(tmp_path / "checkpoint")))
    callback = MlflowTrackingCallback(tracking, campaign="c", model_fingerprint="f" * 64, folder=tmp_path)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, result(4, 50.0))
    # the driver dies and a new one (an unpickled callback) resumes the trial from step 4
    callback = pickle_roundtrip(callback)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, result(4, 50.0, start=4))   # repeated step: not logged twice
    callback.on_trial_result(0, [], trial, result(8, 75.0, start=4))
    trial.last_result = result(8, 75.0)
    callback.on_trial_complete(0, [], trial)

    [run] = tracking.trial_runs("c")
    run_id = run.run_id
    assert run.status == "FINISHED" and run.tags[names.TAG_TRIAL_ID] == "t1"
    assert run.params["steps_per_decay"] == run.params["decay_factor"] == "None"  # decay off
    assert tracking.metric_history(run_id, "score") == [(4, 50.0), (8, 75.0)]
    assert tracking.metric_history(run_id, names.METRIC_RESTORED_FROM) == [(4, 4.0)]
    assert run.metrics["best_score"] == run.metrics["best_accuracy"] == 75.0
    assert run.metrics["best_step"] == 8
    loaded = SoftPrompt.load(tracking.download_prompt(run_id, tmp_path / "download"))
    np.testing.assert_array_equal(loaded.embeddings, np.ones((4, 8), np.float32))


def pickle_roundtrip(obj):
    import pickle

    return pickle.loads(pickle.dumps(obj))


def test_scheduler_stops_end_killed_errors_end_failed_and_nothing_stays_running(tracking, tmp_path):
    callback = MlflowTrackingCallback(tracking, campaign="c", model_fingerprint="f" * 64, folder=tmp_path)
    stopped, failed, orphan, finished = (make_trial(name) for name in ("stopped", "failed", "orphan", "finished"))
    for trial in (stopped, failed, orphan, finished):
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, result(4, 60.0))
        trial.last_result = result(4, 60.0)
    stopped.status = "TERMINATED"
    assert final_status(stopped) == "KILLED"
    callback.on_trial_complete(0, [], stopped)
    failed.status = "ERROR"
    callback.on_trial_error(0, [], failed)
    finished.status, finished.last_result = "TERMINATED", result(8, 70.0)
    callback.on_experiment_end([stopped, failed, finished])  # `orphan` is unknown to this experiment
    states = {run.tags[names.TAG_TRIAL_ID]: run.status for run in tracking.trial_runs("c")}
    assert states == {"stopped": "KILLED", "failed": "FAILED", "orphan": "KILLED", "finished": "FINISHED"}
    assert not tracking.trial_runs("c", status="RUNNING")


def test_writes_that_fail_while_the_store_is_locked_are_completed_when_the_trial_ends(tmp_path, monkeypatch):
    """A real second process holds SQLite's exclusive lock while a result arrives: the write fails
    past MLflow's 20 s wait and the retries, the trial is recorded as pending, and its run is
    completed from Tune's records (result.json) when the trial ends."""
    monkeypatch.setenv("SOFTPROMPT_STORE_RETRY_S", "1")
    database = tmp_path / "mlflow.db"
    store = Store(f"sqlite:///{database}", artifact_root=(tmp_path / "artifacts").as_uri())
    store.prepare_experiment("c")
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    prompt_dir = tmp_path / "checkpoint" / BEST_PROMPT
    SoftPrompt(np.ones((4, 8), np.float32), "f" * 64, task="rte").save(prompt_dir)
    from ray.tune import Checkpoint

    trial = make_trial("locked", checkpoint=Checkpoint.from_directory(tmp_path / "checkpoint"))
    trial.local_path, trial.path = str(trial_dir), str(trial_dir)
    callback = MlflowTrackingCallback(store, campaign="c", model_fingerprint="f" * 64, folder=tmp_path)
    callback.on_trial_start(0, [], trial)

    def report(step: int, score: float) -> None:
        with (trial_dir / "result.json").open("a") as results:   # what Tune records beside the trial
            results.write(json.dumps(result(step, score)) + "\n")
        callback.on_trial_result(0, [], trial, result(step, score))

    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(database)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        report(4, 50.0)                                           # fails: the store is locked
        assert json.loads((tmp_path / "mlflow-pending.json").read_text()) == ["locked"]
    finally:
        holder.kill()
        holder.wait()
    report(8, 75.0)                                               # the store answers again
    trial.status, trial.last_result = "TERMINATED", result(8, 75.0)
    callback.on_trial_complete(0, [], trial)
    [run] = store.trial_runs("c")
    assert run.status == "FINISHED" and store.metric_history(run.run_id, "score") == [(4, 50.0), (8, 75.0)]
    assert run.metrics["best_score"] == 75.0
    assert SoftPrompt.load(store.download_prompt(run.run_id, tmp_path / "download")).embeddings.shape == (4, 8)
    assert json.loads((tmp_path / "mlflow-pending.json").read_text()) == []


LOCK_HOLDER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(600)
"""
