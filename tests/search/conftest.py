"""Fixtures of the search tests: one local Ray cluster and one JAX compilation cache for all of them
(every tiny campaign runs the same shapes, so only the first module compiles)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiny_campaigns import RAY_ENV


HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray cluster for the search tests (its GCS address lets a subprocess driver join it),
    shut down after the last of them (pytest_runtest_teardown), before the next directory's Rays."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in RAY_ENV.items():
            patch.setenv(key, os.environ.get(key, value))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        import ray

        context = ray.init(address="local", num_cpus=2, include_dashboard=False)
        yield context.address_info["gcs_address"]
        ray.shutdown()


@pytest.fixture(scope="session")
def jax_cache() -> str:
    """The session's JAX compilation cache (tests/conftest.py), shared with every other test."""
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


def pytest_runtest_teardown(item, nextitem):
    """After the last search test, stop the shared Ray (a session fixture would live to the end)."""
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        import ray

        ray.shutdown()
