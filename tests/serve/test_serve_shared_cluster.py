"""`softprompt serve` and the cluster around it: a port taken by another program is named by the
command (exit 2); a free port taken between its probe and Serve's bind is replaced by another (the
race that once failed the serving fixtures: Ray's own processes open ports as they start); joining
a cluster someone else started, it deletes only its own application on exit. A module of its own:
the cluster is this test process's, so no other module's Ray may be running when it starts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sample_ensembles import register_sample_ensemble
from softprompt.serve.listen import free_loopback_port, start_on_free_port

BIN = Path(sys.executable).parent / "softprompt"


def test_a_taken_port_is_named_and_a_shared_cluster_keeps_its_other_applications(store, tiny_model, tmp_path):
    """The cluster is this test process's own (never `ray stop`: that would stop every Ray on the machine)."""
    import ray
    from ray import serve

    register_sample_ensemble(store.handle, tiny_model, name="shared-sst2", task="sst2", seeds=(0, 1),
                             experiment_id=store.experiment_id)
    env = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                        "RAY_AUTH_MODE": "disabled", "JAX_PLATFORMS": "cpu"}
    command = [str(BIN), "serve", "shared-sst2@production", "--replica-cpus", "0", "--store", store.uri]

    @serve.deployment
    class Other:
        def __call__(self, request) -> str:
            return "other"

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        refused = subprocess.run([*command, "--port", str(busy)], capture_output=True, text=True, timeout=300,
                                 cwd=tmp_path, env=env)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert f"cannot listen on 127.0.0.1:{busy}: the port is in use" in refused.stderr
        assert "Traceback" not in refused.stderr

        context = ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="error",
                           log_to_driver=False)
        try:
            offered = iter([busy, free_loopback_port()])
            port = start_on_free_port("127.0.0.1", choose_port=lambda host: next(offered))
            assert port != busy
            serve.run(Other.bind(), name="other", route_prefix="/other")
            assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=60).text == "other"
            log = tmp_path / "serve.log"
            process = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.PIPE,
                                       stderr=log.open("w"), text=True, cwd=tmp_path,
                                       env=env | {"RAY_ADDRESS": context.address_info["gcs_address"]})
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
