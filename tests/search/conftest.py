"""Fixtures of the search tests: one local Ray cluster per module, one JAX compilation cache."""

from __future__ import annotations

import os

import pytest

from tiny_campaigns import RAY_ENV


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray cluster for the module (its GCS address lets a subprocess driver join it)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in RAY_ENV.items():
            patch.setenv(key, os.environ.get(key, value))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        import ray

        context = ray.init(address="local", num_cpus=2, include_dashboard=False)
        yield context.address_info["gcs_address"]
        ray.shutdown()


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("jax_cache"))
