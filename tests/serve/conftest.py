"""Fixtures for the serving tests: a temporary MLflow store holding small registered ensembles of
untrained t5-tiny-random prompts (no search layer), and what a loopback client needs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest

from softprompt.serve.listen import start_on_free_port
from softprompt.store import Store

from ports import quiet_port

for _name, _value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                      "RAY_AUTH_MODE": "disabled", "JAX_PLATFORMS": "cpu"}.items():
    os.environ.setdefault(_name, _value)   # before any test starts Ray

TOKEN = "serve-test-token"


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
def _local_serve(**ray_options) -> Iterator[int]:
    import ray
    from ray import serve

    ray.init(include_dashboard=False, num_cpus=4, logging_level="error", log_to_driver=False, **ray_options)
    try:
        yield start_on_free_port("127.0.0.1")
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="session")
def local_serve() -> Callable[..., contextlib.AbstractContextManager[int]]:
    """`with local_serve(**ray_init_options) as port:` a Ray of the test's own with Serve listening on
    a free loopback port; both shut down after, also when starting failed (the next module's Ray
    could not start otherwise)."""
    return _local_serve


@pytest.fixture(scope="session")
def token() -> str:
    return TOKEN


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    """The header every protected request of these tests carries."""
    return {"Authorization": f"Bearer {TOKEN}"}
