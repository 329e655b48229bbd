"""Serve's HTTP port taken by another program: `softprompt serve --port` says so and exits 2; a free
port taken between its probe and Serve's bind is replaced by another (the race that once failed
the serving fixtures: Ray's own processes open ports as they start). A module of its own: it
starts and stops its own Ray."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

from sample_ensembles import register_sample_ensemble
from softprompt.serve.listen import free_loopback_port, start_on_free_port

BIN = Path(sys.executable).parent / "softprompt"


def test_a_taken_port_is_named_by_the_command_and_replaced_by_a_free_one(store, tiny_model, tmp_path):
    import ray
    from ray import serve

    @serve.deployment
    class Echo:
        def __call__(self, request) -> str:
            return "listening"

    register_sample_ensemble(store.handle, tiny_model, name="listen-sst2", task="sst2", seeds=(0,),
                             experiment_id=store.experiment_id)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        result = subprocess.run([str(BIN), "serve", "listen-sst2@production", "--port", str(busy),
                                 "--replica-cpus", "0", "--store", store.uri],
                                capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 2, result.stderr[-3000:]
        assert f"cannot listen on 127.0.0.1:{busy}: the port is in use" in result.stderr
        assert "Traceback" not in result.stderr

        offered = iter([busy, free_loopback_port()])
        ray.init(include_dashboard=False, num_cpus=2, logging_level="error", log_to_driver=False)
        try:
            port = start_on_free_port("127.0.0.1", choose_port=lambda host: next(offered))
            assert port != busy
            serve.run(Echo.bind(), name="listen", route_prefix="/listen")
            assert httpx.get(f"http://127.0.0.1:{port}/listen", timeout=60).text == "listening"
        finally:
            serve.shutdown()
            ray.shutdown()
