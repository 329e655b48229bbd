"""Fixtures for the serving tests: a temporary MLflow store holding small registered ensembles of
untrained t5-tiny-random prompts (no search layer), one Ray + Serve shared by consecutive modules
that deploy on it (`shared_serve`), the settings every test server shares, and what a loopback
client needs. Servers start, turn healthy and stop through `softprompt.serve.lifecycle`, as
`softprompt serve` and the demo do."""

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
    """A Ray of this process's own; it and Serve shut down after, also when starting failed (the
    next Ray could not start otherwise)."""
    import ray
    from ray import serve

    ray.init(include_dashboard=False, num_cpus=4, logging_level="error", log_to_driver=False, **ray_options)
    try:
        yield
    finally:
        serve.shutdown()     # whatever a failed fixture left (lifecycle.stop shut it down otherwise)
        ray.shutdown()


@pytest.fixture(scope="session")
def token() -> str:
    return TOKEN


@pytest.fixture(scope="session")
def auth() -> dict[str, str]:
    """The header every protected request of these tests carries."""
    return {"Authorization": f"Bearer {TOKEN}"}


class SharedServe(NamedTuple):
    port: int            # Serve's HTTP proxy: each module's applications answer on it, under their own names
    metrics_url: str     # Ray's Prometheus endpoint (the replicas' Ray Serve metrics)


class _SharedRay:
    """ONE Ray + Serve proxy for consecutive modules that deploy their applications on it
    (`shared_serve`): each deploys under its own application name with `shared=True`, so its stop
    removes only its own. Opened by the first module that asks; closed before a module none of
    whose tests ask (it may start a Ray of its own in this process), and at the end of the session."""

    def __init__(self) -> None:
        self._stack: contextlib.ExitStack | None = None
        self._serve: SharedServe | None = None

    def open(self) -> SharedServe:
        if self._serve is None:
            from softprompt.serve.listen import start_on_free_port

            metrics_port = quiet_port()
            with contextlib.ExitStack() as stack:
                stack.enter_context(_local_ray(_metrics_export_port=metrics_port))
                port = start_on_free_port()
                self._stack = stack.pop_all()
            self._serve = SharedServe(port, f"http://127.0.0.1:{metrics_port}/metrics")
        return self._serve

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack = self._serve = None


_SHARED = _SharedRay()


@pytest.fixture(scope="module", autouse=True)
def _shared_ray_only_where_asked(request) -> Iterator[None]:
    """Closes the shared Ray before a module none of whose tests use it; at the session's end."""
    if not any("shared_serve" in item.fixturenames for item in request.session.items
               if item.module is request.module):
        _SHARED.close()
    yield


@pytest.fixture(scope="session", autouse=True)
def _close_shared_ray() -> Iterator[None]:
    yield
    _SHARED.close()


@pytest.fixture(scope="module")
def shared_serve(_shared_ray_only_where_asked) -> SharedServe:
    """The shared Ray + Serve proxy (`_SharedRay`): deploy with `lifecycle.serving(app, config,
    port=shared_serve.port, route_prefix=..., shared=True)`."""
    return _SHARED.open()
