"""Fixtures for the serving tests: a temporary MLflow store holding small registered ensembles of
untrained t5-tiny-random prompts (no search layer), a Ray of each module's own, the settings every
test server shares, and what a loopback client needs. Servers start, turn healthy and stop through
`softprompt.serve.lifecycle`, as `softprompt serve` and the demo do."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest

from softprompt.serve.config import ServeConfig
from softprompt.store import Store

from ports import quiet_port

for _name, _value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                      "RAY_AUTH_MODE": "disabled", "JAX_PLATFORMS": "cpu"}.items():
    os.environ.setdefault(_name, _value)   # before any test starts Ray

TOKEN = "serve-test-token"
# What every test server shares: no CPU reserved per replica (a 4-CPU Ray holds many), JAX's own
# cache setting (the session's, tests/conftest.py), aliases followed only where a test asks.
SERVER_SETTINGS = {"replica_cpus": 0, "jax_cache_dir": None, "follow_interval_s": 0}


def _server_config(**settings) -> ServeConfig:
    return ServeConfig(**SERVER_SETTINGS | settings)


@pytest.fixture(scope="session")
def server_config() -> Callable[..., ServeConfig]:
    """`server_config(**settings)`: a test server's ServeConfig, SERVER_SETTINGS then `settings`."""
    return _server_config


class TrackingStore(NamedTuple):
    uri: str
    handle: Store
    experiment_id: str
    root: Path


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> TrackingStore:
    """A fresh SQLite tracking store (created here, in the driver, before any replica reads it)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    handle = Store(uri, artifact_root=(root / "artifacts").as_uri())
    return TrackingStore(uri, handle, handle.prepare_experiment("serve-tests"), root)


SAMPLE_ENSEMBLES = {  # name -> (task, seeds, prompt length): untrained prompts, mixed lengths and tasks
    "sst2-a": ("sst2", (0, 1, 2), 4),
    "rte-b": ("rte", (3, 4, 5), 6),
    "squad-c": ("squad", (6, 7), 5),       # free text: greedy decoding
    "sst2-live": ("sst2", (10, 11, 12), 4),  # the reload test moves its alias
}


@pytest.fixture(scope="session")
def ensembles(store, tiny_model) -> dict[str, str]:
    """SAMPLE_ENSEMBLES registered in `store` (alias `production`); name -> version."""
    from sample_ensembles import register_sample_ensemble

    return {name: register_sample_ensemble(store.handle, tiny_model, name=name, task=task, seeds=seeds,
                                           length=length, experiment_id=store.experiment_id).version
            for name, (task, seeds, length) in SAMPLE_ENSEMBLES.items()}


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Call it for a TCP port free on 127.0.0.1 now, for a server started moments later (`ports`)."""
    return quiet_port


@contextlib.contextmanager
def _local_ray(**ray_options) -> Iterator[None]:
    import ray
    from ray import serve

    ray.init(include_dashboard=False, num_cpus=4, logging_level="error", log_to_driver=False, **ray_options)
    try:
        yield
    finally:
        serve.shutdown()     # whatever a failed fixture left (lifecycle.stop shut it down otherwise)
        ray.shutdown()


@pytest.fixture(scope="session")
def local_ray() -> Callable[..., contextlib.AbstractContextManager[None]]:
    """`with local_ray(**ray_init_options):` a Ray of the test's own for `lifecycle.serving`; it
    and Serve shut down after, also when starting failed (the next module's Ray could not start
    otherwise)."""
    return _local_ray


@pytest.fixture(scope="session")
def token() -> str:
    return TOKEN


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    """The header every protected request of these tests carries."""
    return {"Authorization": f"Bearer {TOKEN}"}
