"""Fused trials in a real campaign (t5-tiny-random, local Ray): the trials' steps and evaluations
go through the node's step server, every trial stays a Tune trial with its own MLflow run, each
ends with the prompt it gets trained alone — also when the step server is killed mid-way and the
trials on it are retried from their checkpoints — `search status` marks the fused trials, and the
campaign's step servers end with it."""

from __future__ import annotations

import numpy as np

from softprompt.core.models import load_model
from softprompt.core.prompts import SoftPrompt
from softprompt.core.train import train
from softprompt.search import launch as launching
from softprompt.search.campaign import parse_campaign
from softprompt.search.report import shown_columns
from softprompt.search.space import train_config
from softprompt.search.step_server import NAMESPACE
from softprompt.store import Store, names

import drills
from tiny_campaigns import tiny_campaign


def test_fused_trials_end_with_the_prompts_they_get_alone_even_after_their_server_died(ray_address, jax_cache,
                                                                                        tmp_path):
    import ray

    campaign = parse_campaign(tiny_campaign(
        "fused-rte", tmp_path / "runs", jax_cache, trials=1, scheduler={"type": "none"},
        overrides={"prompt_length": {"grid": [4, 6]}}, fuse={"enabled": True, "max_trials": 4, "window_ms": 200}))
    # two trials at once, prompt lengths 4 and 6 (the shorter left-padded in the server's table);
    # different learning rates and batch sizes fused: tests/core/test_fused.py
    campaign = campaign.replace(fixed={k: v for k, v in campaign.fixed.items() if k != "prompt_length"})
    assert campaign.fused()
    # the first trial to report step 4 kills the step server: the trials on it fail, are retried
    # from their step-4 checkpoints and go on fused on a new server
    ray.cloudpickle.register_pickle_by_value(drills)   # the hook travels to the trial processes by value
    result = launching.launch(campaign, trial_hook=drills.KillStepServerOnce(4, tmp_path / "drills", "fused-rte"))
    assert (tmp_path / "drills" / "step-server.killed").exists()
    assert len(result.rows) == 2 and {row.status for row in result.rows} == {"TERMINATED"}
    assert all(row.step == 8 for row in result.rows) and sum(row.failures for row in result.rows) >= 1
    assert all(row.fused >= 1 for row in result.rows)      # every step went through a step server
    assert max(row.fused for row in result.rows) > 1        # and steps of two trials were fused
    assert "fused" in shown_columns(result.rows)
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == NAMESPACE]

    store = Store(result.tracking_uri)
    model = load_model("t5-tiny-random")
    runs = {run.tags[names.TAG_TRIAL_ID]: run for run in store.trial_runs("fused-rte")}
    assert sorted(runs) == sorted(row.trial_id for row in result.rows)      # one run per trial, retries included
    assert {run.status for run in runs.values()} == {names.FINISHED}
    for row in result.rows:
        run = runs[row.trial_id]
        fused = SoftPrompt.load(store.download_prompt(run.run_id, tmp_path / run.run_id), model=model)
        trained_alone = train(train_config(row.config), progress=False)
        alone = trained_alone.prompt
        assert fused.step == alone.step and fused.embeddings.shape == (row.config["prompt_length"], model.d_model)
        np.testing.assert_allclose(fused.embeddings, alone.embeddings, rtol=1e-4, atol=1e-5)
        # the evaluations ran on the step server's model: the same scores as alone
        np.testing.assert_allclose(run.metrics["best_score"], max(h["score"] for h in trained_alone.history))
