"""Fused trials in a real campaign (t5-tiny-random, local Ray): the trials' steps and evaluations
go through the node's step server, every trial stays a Tune trial with its own MLflow run, each
ends with the prompt it gets trained alone — also when the step server is killed mid-way and the
trials on it are retried from their checkpoints — `search status` marks the fused trials, and the
campaign's step servers end with it; a trial ASHA stops leaves its group, and the next pending trial
takes its slot at once."""

from __future__ import annotations

import json
import time

import numpy as np

from softprompt.core.models import load_model
from softprompt.core.prompts import SoftPrompt
from softprompt.core.train import train
from softprompt.search import launch as launching
from softprompt.search.campaign import parse_campaign
from softprompt.search.report import shown_columns
from softprompt.search.space import train_config
from softprompt.search.step_server import NAMESPACE, SERVERS_FILE
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


def test_a_trial_asha_stops_leaves_its_group_and_the_next_pending_trial_takes_its_slot_at_once(
        ray_address, jax_cache, tmp_path):
    """t5-tiny-random answers every input alike, so a trial's score is its task's majority share:
    RTE's trials run first (Tune's grid order), and ASHA stops each CB trial at its first rung while
    other CB trials are still pending. Each stopped trial left the step server's group when it
    reported and never came back; the next trial started, and joined the group, within seconds."""
    campaign = parse_campaign(tiny_campaign(
        "refill", tmp_path / "runs", jax_cache, trials=3, tasks=["rte", "cb"],
        fuse={"enabled": True, "max_trials": 4, "window_ms": 200}))
    result = launching.launch(campaign)
    trials = {}
    for path in result.experiment_dir.glob("*/result.json"):
        reports = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        trials[reports[0]["trial_id"]] = {"task": reports[0]["config"]["task"], "started": reports[0]["started_at"],
                                          "last": reports[-1]["reported_at"], "step": reports[-1]["step"]}
    assert len(trials) == 6 and {t["step"] for t in trials.values() if t["task"] == "rte"} == {8}
    stopped = {tid: t for tid, t in trials.items() if t["step"] < 8}
    [record] = json.loads((result.experiment_dir / SERVERS_FILE).read_text())
    events: dict[str, list] = {}
    for when, kind, trial in record["events"]:
        events.setdefault(trial, []).append((when, kind))
    refilled = 0
    for tid, trial in stopped.items():
        assert trial["task"] == "cb"
        # left before its last report (which Tune answered with a stop), and never joined again
        assert events[tid][-1][0] <= trial["last"] and events[tid][-1][1] == "leave"
        later = [t for t in trials.values() if t["started"] > trial["last"]]
        if later:            # trials were pending when it was stopped: the next one took its slot
            successor = min(later, key=lambda t: t["started"])
            successor_id = next(i for i, t in trials.items() if t is successor)
            assert successor["started"] - trial["last"] < 3.0, (trial, successor)
            assert events[successor_id][0][1] == "join" and events[successor_id][0][0] - trial["last"] < 3.0
            refilled += 1
    assert refilled >= 1     # at least one stop happened while trials were pending
    assert record["live"] == [] and record["trial_steps"] == sum(t["step"] for t in trials.values())


def test_the_driver_takes_a_trial_whose_process_died_out_of_its_step_servers_group(ray_address):
    """A trial process that dies mid-step cannot leave its server's group itself; Tune's record of
    its failure (retried or final) makes the driver's callback take it out, so the others stop
    waiting for it."""
    import ray
    from ray.tune.experiment import Trial

    from softprompt.core.batching import encode_pair
    from softprompt.search.fused_departures import FusedDepartures
    from softprompt.search.shared_model import share_model
    from softprompt.search.step_server import FuseSettings, end_step_servers, step_server

    model = load_model("t5-tiny-random")
    server = step_server("departures", ray.put(share_model(model)), FuseSettings(window_ms=50), model=model.name,
                         dtype="float32", target_format="plain")
    pairs = [encode_pair(model, "a premise", "yes", max_input_tokens=16, max_target_tokens=4)]
    prompt = np.zeros((2, model.d_model), np.float32)
    try:
        for trial_id in ("a", "b"):
            ray.get(server.value_and_grad.remote(trial_id, prompt, pairs))   # both in the group now
        assert ray.get(server.record.remote())["live"] == ["a", "b"]
        callback = FusedDepartures("departures")
        callback.on_trial_recover(0, [], Trial("run_trial", config={}, stub=True, trial_id="a"))
        callback.on_trial_error(0, [], Trial("run_trial", config={}, stub=True, trial_id="b"))
        deadline = time.monotonic() + 10     # the callback does not wait for the servers
        while (record := ray.get(server.record.remote()))["live"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record["live"] == [] and [kind for _, kind, _ in record["events"]] == ["join", "join", "leave", "leave"]
    finally:
        assert end_step_servers("departures") == 1
