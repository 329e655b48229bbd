"""`softprompt serve` joining a cluster someone else started: on exit it deletes only its own
application. A module of its own: the cluster is this test process's, so no other module's Ray
may be running when it starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sample_ensembles import register_sample_ensemble
from softprompt.serve.listen import start_on_free_port

BIN = Path(sys.executable).parent / "softprompt"


def test_serve_on_a_shared_cluster_removes_only_its_own_application(store, tiny_model, tmp_path):
    """`softprompt serve` joining a cluster through RAY_ADDRESS leaves the cluster's other apps running.
    The cluster is this test process's own (never `ray stop`: that would stop every Ray on the machine)."""
    import ray
    from ray import serve

    register_sample_ensemble(store.handle, tiny_model, name="shared-sst2", task="sst2", seeds=(0, 1),
                             experiment_id=store.experiment_id)
    env = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                        "RAY_AUTH_MODE": "disabled", "JAX_PLATFORMS": "cpu"}

    @serve.deployment
    class Other:
        def __call__(self, request) -> str:
            return "other"

    context = ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="error",
                       log_to_driver=False)
    try:
        port = start_on_free_port("127.0.0.1")
        serve.run(Other.bind(), name="other", route_prefix="/other")
        log = tmp_path / "serve.log"
        process = subprocess.Popen([str(BIN), "serve", "shared-sst2@production", "--port", str(port),
                                    "--replica-cpus", "0", "--store", store.uri],
                                   stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                                   env=env | {"RAY_ADDRESS": context.address_info["gcs_address"]}, cwd=tmp_path)
        deadline = time.monotonic() + 240
        line = ""
        while not line.startswith("{") and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
        assert line.startswith("{"), log.read_text()[-3000:]
        assert json.loads(line)["ensembles"][0]["name"] == "shared-sst2"
        assert "softprompt" in serve.status().applications
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert sorted(serve.status().applications) == ["other"]
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=30).text == "other"
    finally:
        serve.shutdown()
        ray.shutdown()
