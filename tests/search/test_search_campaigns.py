"""Campaigns end to end on t5-tiny-random: ASHA on RTE, a killed driver resumed, a failing trial
retried from its checkpoint (MLflow on PostgreSQL: tests/search/test_search_faults.py, the password
test). One local Ray cluster serves the search tests; all trials share one JAX compilation cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from softprompt.search import launch as launching
from softprompt.search.campaign import parse_campaign
from softprompt.store import Store, names

import drills
from tiny_campaigns import check_runs, tiny_campaign

def tracking_for(result) -> Store:
    return Store(result.tracking_uri)


def test_asha_campaign_on_rte_tracks_every_trial(ray_address, jax_cache, tmp_path):
    campaign = parse_campaign(tiny_campaign("asha-rte", tmp_path / "runs", jax_cache))
    result = launching.launch(campaign)
    assert len(result.rows) == 4 and {row.status for row in result.rows} == {"TERMINATED"}
    assert all(row.curve and row.curve[0][0] == 4 for row in result.rows)
    assert result.tracking_uri == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    runs = check_runs(tracking_for(result), "asha-rte", trials=4, tmp_path=tmp_path)
    assert sorted(run.params["seed"] for run in runs) == ["0", "1", "2", "3"]
    assert result.curves.stat().st_size > 1000 and (result.experiment_dir / "trials.txt").exists()
    [summary] = tracking_for(result).runs_of("asha-rte", ["tags.`softprompt.kind` = 'campaign'"])
    artifacts = {f.path for f in tracking_for(result).client.list_artifacts(summary.run_id)}
    assert artifacts == {"curves.png", "trials.txt", "trials.csv", "campaign.json"}


def test_killed_driver_is_resumed_without_losing_or_duplicating_runs(ray_address, jax_cache, tmp_path):
    storage = tmp_path / "runs"
    path = tmp_path / "campaign.yaml"
    settings = tiny_campaign("killed", storage, jax_cache, trials=2, scheduler="none", max_concurrent_trials=1)
    settings["fixed"] |= {"steps": 40}  # 10 checkpoints: a window to kill it between them
    path.write_text(yaml.safe_dump(settings))
    env = os.environ | {"RAY_ADDRESS": ray_address, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "softprompt.cli", "search", "launch", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tracking = Store(f"sqlite:///{storage / 'mlflow.db'}")
    try:
        deadline = time.monotonic() + 240
        while not _mid_trial_checkpoint_saved(storage / "killed", checkpoints_per_trial=10):
            assert driver.poll() is None, "the driver ended before it was killed"
            assert time.monotonic() < deadline, "no resumable state within 240 s"
            time.sleep(0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert tracking.trial_runs("killed", status=names.RUNNING), "the kill came after the campaign"

    from typer.testing import CliRunner

    from softprompt.cli import app

    outcome = CliRunner().invoke(app, ["search", "resume", "killed", "--store", str(storage)])
    assert outcome.exit_code == 0, outcome.output
    runs = check_runs(tracking, "killed", trials=2, steps=40, tmp_path=tmp_path)
    restored = [tracking.metric_history(run.run_id, names.METRIC_RESTORED_FROM) for run in runs]
    assert any(restored), "no trial continued from its checkpoint"
    shown = CliRunner().invoke(app, ["search", "status", "killed", "--store", str(storage)])
    assert shown.exit_code == 0 and json.loads(shown.stdout.splitlines()[-1])["states"] == {"TERMINATED": 2}


def _mid_trial_checkpoint_saved(folder: Path, *, checkpoints_per_trial: int) -> bool:
    """A trial is between checkpoints and Tune's experiment state was saved well after one of them.

    Checkpoints are counted by their index (checkpoint_000001 is the second), not by the folders
    left: Tune keeps only the last two, so a finished trial also shows fewer than all of them."""
    states = sorted(folder.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return False
    saved = states[-1].stat().st_mtime
    for trial in folder.glob("run_trial_*"):
        checkpoints = {int(c.name.rsplit("_", 1)[1]): c.stat().st_mtime for c in trial.glob("checkpoint_*")}
        if checkpoints and max(checkpoints) + 1 < checkpoints_per_trial and saved > min(checkpoints.values()) + 1.0:
            return True
    return False


def test_a_trial_that_fails_once_is_retried_from_its_checkpoint(ray_address, jax_cache, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(drills)   # the hook travels to the trial processes by value
    campaign = parse_campaign(tiny_campaign("fails-once", tmp_path / "runs", jax_cache, trials=1, scheduler="none"))
    result = launching.launch(campaign, trial_hook=drills.FailOnce(4, tmp_path / "drills"))
    [row] = result.rows
    assert row.status == "TERMINATED" and row.failures == 1 and row.step == 8
    tracking = tracking_for(result)
    [run] = check_runs(tracking, "fails-once", trials=1, tmp_path=tmp_path)
    assert run.status == names.FINISHED
    assert tracking.metric_history(run.run_id, names.METRIC_RESTORED_FROM) == [(4, 4.0)]
    assert [step for step, _ in tracking.metric_history(run.run_id, "score")] == [4, 8]
