"""Tiny t5-tiny-random campaigns for the search tests."""

from __future__ import annotations

import collections
from pathlib import Path

from softprompt.core.models import load_model
from softprompt.core.prompts import SoftPrompt
from softprompt.store import Store, names

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def tiny_campaign(name: str, storage: Path, jax_cache: str, *, trials: int = 4, **changes) -> dict:
    """Table 6 with every axis fixed, trials differing by seed: every trial runs the same shapes, so
    the shared JAX cache compiles each once."""
    return {"name": name, "tasks": ["rte"], "model": "t5-tiny-random", "dtype": "float32", "space": "table6",
            "fixed": {"learning_rate": 0.3, "parameter_scaling": False, "batch_size": 4, "steps": 8,
                      "warmup_steps": 0, "decay_factor": None, "prompt_length": 4, "init": "sampled_vocab"},
            "num_samples": 1, "seeds": trials, "scheduler": {"type": "asha", "grace_period": 1},
            "resources": {"cpu": 1}, "max_concurrent_trials": 2, "eval_every": 4, "max_eval_examples": 8,
            "storage_path": str(storage), "jax_cache_dir": jax_cache} | changes


def check_runs(tracking: Store, campaign: str, *, trials: int, tmp_path: Path, steps: int = 8) -> list:
    """Every trial has exactly one ended run with params, histories, best_ metrics and a prompt."""
    runs = tracking.trial_runs(campaign)
    per_trial = collections.Counter(run.tags[names.TAG_TRIAL_ID] for run in runs)
    assert len(per_trial) == trials and set(per_trial.values()) == {1}, per_trial
    model = load_model("t5-tiny-random")
    for run in runs:
        run_id = run.run_id
        assert run.status in (names.FINISHED, names.KILLED), run.status
        assert run.params["task"] == "rte" and run.params["decay_factor"] == "None"
        assert run.params["steps"] == str(steps) and run.params["learning_rate"] == "0.3"
        assert run.tags[names.TAG_MODEL_FINGERPRINT] == model.fingerprint
        assert run.tags[names.TAG_CAMPAIGN] == campaign
        scores = tracking.metric_history(run_id, "score")
        evaluated = [step for step, _ in scores]
        assert evaluated == sorted(set(evaluated)) and evaluated[0] == 4
        for name in ("score", "accuracy"):
            history = tracking.metric_history(run_id, name)
            assert run.metrics[f"best_{name}"] == max(value for _, value in history)
        assert len(tracking.metric_history(run_id, "loss")) == len(scores)
        best_step = run.metrics["best_step"]
        assert dict(scores)[int(best_step)] == run.metrics["best_score"]
        if run.status == names.FINISHED:
            assert evaluated[-1] == steps
        prompt = SoftPrompt.load(tracking.download_prompt(run_id, tmp_path / run_id), model=model)
        assert prompt.embeddings.shape == (4, model.d_model) and prompt.step == best_step
    return runs
