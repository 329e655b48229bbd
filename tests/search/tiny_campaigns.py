"""Tiny t5-tiny-random campaigns for the search tests."""

from __future__ import annotations

from pathlib import Path

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
