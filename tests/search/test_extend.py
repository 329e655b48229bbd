"""`search extend` on a tiny Optuna campaign (t5-tiny-random, the learning rate searched): exactly N
new runs in the same experiment and campaign folder, and the extension's Optuna study — restored
from the searcher state Tune saved — holds the earlier trials as completed trials with their
configurations and scores before its own."""

from __future__ import annotations

import collections
import json
import math
import re

import pytest
from typer.testing import CliRunner

from softprompt.cli import app
from softprompt.search import launch as launching
from softprompt.search.campaign import CampaignError, parse_campaign
from softprompt.search.extend import EXTENSIONS, extend, extensions_summary
from softprompt.search.report import trial_rows
from softprompt.store import Store, names

from tiny_campaigns import tiny_campaign

runner = CliRunner()


def _runs(result) -> list:
    return Store(result.tracking_uri).trial_runs(result.name)


def _study(folder):
    """The Optuna study the extension's searcher ended with (Tune saves the searcher's state)."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    limiter = ConcurrencyLimiter(OptunaSearch(), max_concurrent=1)
    limiter.restore_from_dir(str(folder))
    return limiter.searcher._ot_study


def test_extend_adds_exactly_n_runs_from_a_warm_started_searcher(ray_address, jax_cache, tmp_path):
    spec = tiny_campaign("extend-optuna", tmp_path / "runs", jax_cache, trials=1, num_samples=2,
                         search={"type": "optuna", "seed": 0})
    del spec["fixed"]["learning_rate"]                       # searched (with steps_per_decay, unused: no decay)
    spec["fixed"]["steps"] = 4                               # one evaluation per trial
    campaign = parse_campaign(spec)
    first = launching.launch(campaign)
    assert len(first.rows) == 2 and len(_runs(first)) == 2
    earlier = {row.trial_id: row for row in first.rows}

    with pytest.raises(CampaignError, match="trials"):
        extend("extend-optuna", 0, storage_path=tmp_path / "runs")
    done = runner.invoke(app, ["search", "extend", "extend-optuna", "--trials", "1", "--store", str(tmp_path / "runs")])
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["experiment_dir"] == str(first.experiment_dir) and summary["trials"] == 3
    rows = trial_rows(first.experiment_dir)
    assert len(rows) == 3 and set(earlier) < {row.trial_id for row in rows}
    runs = _runs(first)
    per_trial = collections.Counter(run.tags[names.TAG_TRIAL_ID] for run in runs)
    assert len(per_trial) == 3 and set(per_trial.values()) == {1}             # exactly 1 new run
    assert {run.tags[names.TAG_CAMPAIGN] for run in runs} == {"extend-optuna"}

    study = _study(first.experiment_dir / EXTENSIONS / "1")
    given, sampled = study.trials[:2], study.trials[2:]
    assert [t.state.name for t in given] == ["COMPLETE", "COMPLETE"] and len(sampled) == 1
    assert sorted((t.params["learning_rate"], t.value) for t in given) == sorted(
        (row.config["learning_rate"], row.best_score) for row in earlier.values())
    new = [row for row in rows if row.trial_id not in earlier]
    assert sorted(t.params["learning_rate"] for t in sampled) == sorted(row.config["learning_rate"] for row in new)
    assert all(math.isfinite(row.best_score) for row in new)

    status = runner.invoke(app, ["search", "status", "extend-optuna", "--store", str(tmp_path / "runs")])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout.strip().splitlines()[-1])
    assert shown["trials"] == 3 and shown["states"] == {"TERMINATED": 3}
    assert shown["extensions"] == extensions_summary(first.experiment_dir) == [
        {"extension": 1, "trials": 1, "finished": True, "warm_start": 2}] == summary["extensions"]

    again = extend("extend-optuna", 1, storage_path=tmp_path / "runs")             # extending twice
    assert len(again.rows) == 4 and len(_runs(first)) == 4 and again.finished
    assert [t.state.name for t in _study(first.experiment_dir / EXTENSIONS / "2").trials] == ["COMPLETE"] * 4
    assert [e["warm_start"] for e in extensions_summary(first.experiment_dir)] == [2, 3]

    page = tmp_path / "extend-optuna.html"
    assert runner.invoke(app, ["search", "report", "extend-optuna", "--html", str(page), "--store",
                               str(tmp_path / "runs")]).exit_code == 0
    curves = re.findall(r'<polyline data-trial="([^"]+)"', page.read_text())
    assert sorted(curves) == sorted(r.trial_id for r in again.rows)


def test_extend_refuses_a_running_campaign_and_a_count_off_the_grid(tmp_path):
    from softprompt.search.state import Stored, write_state

    campaign = parse_campaign(tiny_campaign("half-done", tmp_path / "runs", str(tmp_path / "jax"), trials=2))
    folder = launching.experiment_dir("half-done", tmp_path / "runs")
    folder.mkdir(parents=True)
    write_state(folder, Stored(campaign, f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", None, "0" * 64))
    with pytest.raises(CampaignError, match="multiple of 2"):              # 1 task x 2 seeds per sample
        extend("half-done", 3, storage_path=tmp_path / "runs")
    with pytest.raises(CampaignError, match="search resume half-done"):
        extend("half-done", 2, storage_path=tmp_path / "runs")
    refused = runner.invoke(app, ["search", "extend", "half-done", "--trials", "2", "--store", str(tmp_path / "runs")])
    assert refused.exit_code == 2 and "search resume half-done" in refused.output
