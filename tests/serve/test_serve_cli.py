"""`softprompt serve` as a user runs it: a subprocess with its own Ray, two replicas loading a tiny
Qwen3 Hugging Face folder, a token from the environment; a reload reaches both replicas; Ctrl-C
(SIGINT) shuts everything down cleanly. An ensemble whose model folder is gone is refused before Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from sample_ensembles import register_sample_ensemble

BIN = Path(sys.executable).parent / "softprompt"


def _ready_line(process: subprocess.Popen, log: Path, timeout: float) -> dict:
    """The JSON line `softprompt serve` prints once the application is up."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for line in lines:
            if line.startswith("{"):
                return json.loads(line)
        time.sleep(0.2)
    raise AssertionError(f"softprompt serve did not become ready (exit {process.poll()}): {log.read_text()[-3000:]}")


def test_app_builder_and_tracking_uri_defaults(monkeypatch, tmp_path):
    from softprompt.serve.app import AppArgs, app_builder
    from softprompt.serve.front import model_of
    from softprompt.serve.guard import token_digest
    from softprompt.store import resolve_tracking_uri as default_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/runs/mlflow.db"   # absolute for replicas
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000" and default_tracking_uri("mlruns") == f"{tmp_path.resolve()}/mlruns"
    app = app_builder(AppArgs(ensembles="a@production, b/3", versions="a/7, b/3", replicas=2, token="t"))
    config = model_of(app).init_args[0]
    assert config.ensembles == ("a@production", "b/3") and config.tracking_uri == "http://127.0.0.1:5000"
    assert config.versions == ("a/7", "b/3") and config.settings.token is None
    assert app._bound_deployment.init_args[1].token_sha256 == token_digest("t")   # only the digest, to the front
    assert model_of(app).num_replicas == app._bound_deployment.num_replicas == 2


def test_unknown_ensemble_is_a_clear_error_before_ray_starts(store):
    result = subprocess.run([str(BIN), "serve", "missing@production", "--store", store.uri],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no registered ensemble version for 'missing@production'" in result.stderr


@pytest.fixture(scope="module")
def qwen3(decoder_folder):
    from softprompt.core.models import load_model

    return load_model(str(decoder_folder("qwen3")), dtype="float32")


def test_an_ensemble_whose_model_folder_is_gone_is_refused_before_ray_starts(store, qwen3, tmp_path):
    from softprompt.core.models import load_model

    copy = shutil.copytree(qwen3.name, tmp_path / "moved-qwen3")
    moved = load_model(str(copy), dtype="float32", cached=False)
    assert moved.fingerprint == qwen3.fingerprint
    register_sample_ensemble(store.handle, moved, name="moved-sst2", task="sst2", seeds=(0, 1), alias="moved",
                             experiment_id=store.experiment_id)
    shutil.rmtree(copy)
    result = subprocess.run([str(BIN), "serve", "moved-sst2@moved", "--store", store.uri],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"ensemble 'moved-sst2' was built on the model '{moved.name}', which is not on this machine" in result.stderr


def test_serve_command_with_two_replicas_reload_and_ctrl_c(store, qwen3, free_port, tmp_path):
    first = register_sample_ensemble(store.handle, qwen3, name="cli-sst2", task="sst2", seeds=(0, 1, 2),
                                     experiment_id=store.experiment_id)
    port = free_port()
    env = os.environ | {"SOFTPROMPT_API_TOKEN": "cli-token", "JAX_PLATFORMS": "cpu"}
    log = tmp_path / "serve.log"   # a file, not a pipe: Ray's logs would fill a pipe and block the server
    process = subprocess.Popen(
        [str(BIN), "serve", "cli-sst2@production", "--port", str(port), "--replicas", "2",
         "--replica-cpus", "0", "--store", store.uri, "--jax-cache-dir", str(tmp_path / "jax")],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, cwd=tmp_path)
    try:
        ready = _ready_line(process, log, timeout=240)
        assert ready["url"] == f"http://127.0.0.1:{port}" and ready["auth"] is True
        assert ready["ensembles"] == [{"name": "cli-sst2", "version": first.version, "task": "sst2"}]
        with httpx.Client(base_url=ready["url"], headers={"Authorization": "Bearer cli-token"}, timeout=120) as http:
            body = {"task": "sst2", "inputs": [{"sentence": "a charming film"}]}
            assert http.post("/v1/predict", json=body).json()["ensemble"]["version"] == first.version
            assert httpx.post(f"{ready['url']}/v1/predict", json=body).status_code == 401

            second = register_sample_ensemble(store.handle, qwen3, name="cli-sst2", task="sst2",
                                              seeds=(3, 4, 5), experiment_id=store.experiment_id)
            reloaded = http.post("/v1/ensembles/cli-sst2/reload").json()
            assert reloaded["version"] == second.version and reloaded["replicas"] == 2
            replicas = set()
            for _ in range(12):   # requests spread over both replicas: each serves the new version
                assert http.post("/v1/predict", json=body).json()["ensemble"]["version"] == second.version
                replicas.add(http.get("/v1/ensembles").json()["replica"])
            assert len(replicas) == 2
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("softprompt serve did not stop on SIGINT")
    assert code == 0, log.read_text()[-3000:]
