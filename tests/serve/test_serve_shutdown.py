"""Graceful shutdown as it happens in production: `softprompt serve` gets SIGTERM while requests
are in flight. Health turns 503 at once, the requests that can finish within the grace period
finish (200), the rest get a clean 503, every client gets an HTTP answer (never a reset), and the
command exits 0 with its replicas gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sample_ensembles import register_sample_ensemble
from test_serve_cli import BIN, _ready_line

GRACE_S = 6                    # room for the short requests on a loaded 2-core machine
SHORT, LONG = 4, 6             # requests that fit in the grace period, requests that cannot
LONG_INPUTS = 2048             # one pass per input and member: far more than GRACE_S of work on any machine


def _post(url: str, inputs: int) -> int | str:
    body = {"task": "sst2", "inputs": [{"sentence": f"a charming film, number {i}"} for i in range(inputs)]}
    try:
        return httpx.post(f"{url}/v1/predict", json=body, timeout=120).status_code
    except httpx.HTTPError as error:          # a reset or a refused connection: what must not happen
        return f"{type(error).__name__}: {error}"


def test_sigterm_drains_requests_in_flight(store, tiny_model, free_port, tmp_path):
    register_sample_ensemble(store.handle, tiny_model, name="drain-sst2", task="sst2", seeds=(0, 1, 2),
                             experiment_id=store.experiment_id)
    port = free_port()
    log = tmp_path / "serve.log"
    # one input per pass, one model row per chunk: a long request takes many seconds
    process = subprocess.Popen(
        [str(BIN), "serve", "drain-sst2@production", "--port", str(port), "--replica-cpus", "0",
         "--store", store.uri, "--jax-cache-dir", str(tmp_path / "jax"), "--grace-period", str(GRACE_S),
         "--max-batch-size", "1", "--max-rows-per-pass", "1", "--batch-wait-timeout-s", "0",
         "--max-inputs", str(LONG_INPUTS)],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=os.environ | {"JAX_PLATFORMS": "cpu"},
        cwd=tmp_path)
    try:
        url = _ready_line(process, log, timeout=240)["url"]
        assert _post(url, 1) == 200                                   # compiled: passes now take their time
        with ThreadPoolExecutor(SHORT + LONG) as pool:
            short = [pool.submit(_post, url, 2) for _ in range(SHORT)]
            time.sleep(0.3)                                           # the short ones are queued first
            long = [pool.submit(_post, url, LONG_INPUTS) for _ in range(LONG)]
            time.sleep(1.0)
            assert not any(f.done() for f in long)                    # in flight when the signal comes
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            health = None
            while time.monotonic() - signalled < 3:
                health = httpx.get(f"{url}/healthz", timeout=5).status_code
                if health == 503:
                    break
                time.sleep(0.1)
            answers = [f.result() for f in short + long]
        code = process.wait(timeout=GRACE_S + 60)
    finally:
        if process.poll() is None:
            process.kill()
    assert health == 503                                              # load balancers drain at once
    assert all(isinstance(a, int) for a in answers), answers          # every request got an HTTP answer
    assert answers[:SHORT] == [200] * SHORT, answers                 # these finished within the grace
    assert set(answers[SHORT:]) <= {200, 503} and 503 in answers[SHORT:], answers
    assert code == 0, log.read_text()[-3000:]
    assert "request(s) answered 503 at the end of the grace period" in log.read_text()
    with pytest.raises(httpx.HTTPError):                              # nothing listens any more
        httpx.get(f"{url}/healthz", timeout=5)
