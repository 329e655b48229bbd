"""A real two-node Ray cluster on this machine (`ray start --head` and a second `ray start --address`
with its own resources, both bound to 127.0.0.1): a 2-trial campaign launched the way the KubeRay
RayJob launches it lands trials on both nodes, tracked in MLflow on the local PostgreSQL; then the
generated Serve config (`infra/generate_rayservice.py`) is deployed with `serve deploy` and answers
`/v1/predict` with the ensemble the campaign built.

Both nodes share this machine's filesystem, which stands in for the shared storage (NFS, S3) that
`storage_path` must be on a real cluster."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from softprompt.store import Store, names

from ports import quiet_port, quiet_ports

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1: without it `ray start --address` refuses to add a second node
# (the search tests set it to 0 for their single-node clusters).
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
       "JAX_PLATFORMS": "cpu", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
NODE_PORTS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
              "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port")


def _ray(*arguments: str, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "ray"), *arguments], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"ray {arguments[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


def _node_flags(ports: list[int]) -> list[str]:
    """Every per-node port explicit: two nodes on one address must not both take a default."""
    return [f"{flag}={port}" for flag, port in zip(NODE_PORTS, ports, strict=True)]


def _stop(temp_dir: str) -> None:
    """Stops this cluster's processes only (each names its temp dir on its command line; the workers
    exit with their raylet). `ray stop` would also stop every other Ray on the machine."""
    processes = []
    for process in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in process.info["cmdline"] or ()):
            try:
                process.terminate()
                processes.append(process)
            except psutil.NoSuchProcess:
                pass
    _, alive = psutil.wait_procs(processes, timeout=10)
    for process in alive:
        process.kill()


@pytest.fixture(scope="module")
def cluster():
    """(GCS address, dashboard URL, environment) of a head node with 1 CPU and a worker node with 1 CPU
    and a custom resource; stopped afterwards."""
    ports = quiet_ports(3 + 2 * len(NODE_PORTS))     # drawn at once: distinct from each other
    (gcs_port, dashboard_port, client_port), head_ports, worker_ports = (
        ports[:3], ports[3: 3 + len(NODE_PORTS)], ports[3 + len(NODE_PORTS):])
    temp_dir = tempfile.mkdtemp(prefix="sp2n-", dir="/tmp")  # short: Ray's socket paths must fit
    env = os.environ | ENV | {"SOFTPROMPT_HOME": os.environ.get("SOFTPROMPT_HOME", str(Path.home() / ".cache/softprompt"))}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    address = f"127.0.0.1:{gcs_port}"
    try:
        _ray("start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs_port}", "--num-cpus=1",
             "--object-store-memory=300000000", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client_port}",
             "--disable-usage-stats", f"--temp-dir={temp_dir}", *_node_flags(head_ports), env=env)
        _ray("start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
             "--resources={\"second_node\": 1}", "--object-store-memory=300000000", f"--temp-dir={temp_dir}", *_node_flags(worker_ports), env=env)
        yield address, f"http://127.0.0.1:{dashboard_port}", env | {"RAY_ADDRESS": address}
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _cluster_nodes(env: dict) -> list[dict]:
    """The alive nodes (id, CPUs, custom resources), as a driver on the cluster sees them."""
    script = ("import json, ray; ray.init(); print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} "
              "for n in ray.nodes() if n['Alive']]))")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _campaign_file(folder: Path, tracking_uri: str) -> Path:
    """2 t5-tiny-random trials of one CPU each, at once: the two nodes have one CPU each."""
    campaign = {"name": "two-nodes", "tasks": ["rte"], "model": "t5-tiny-random", "dtype": "float32", "space": "table6",
                "fixed": {"learning_rate": 0.3, "parameter_scaling": False, "batch_size": 4, "steps": 8,
                          "warmup_steps": 0, "decay_factor": None, "prompt_length": 4, "init": "sampled_vocab"},
                "num_samples": 1, "seeds": 2, "scheduler": "none", "resources": {"cpu": 1},
                "max_concurrent_trials": 2, "eval_every": 4, "max_eval_examples": 8,
                "tracking_uri": tracking_uri, "storage_path": str(folder / "runs"), "ensemble": {"top": 2, "select": "top"}}
    path = folder / "two-nodes.yaml"
    path.write_text(yaml.safe_dump(campaign))
    return path


def _generated_serve_config(tracking_uri: str, port: int) -> dict:
    """infra's generated Serve config, pointed at this cluster's store, ensemble and a free port."""
    spec = importlib.util.spec_from_file_location("generate_rayservice", ROOT / "infra" / "generate_rayservice.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    config = generator.serve_config()
    # One proxy: both nodes have the address 127.0.0.1, so a proxy per node would fight for the port.
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config["applications"][0]["runtime_env"]["env_vars"] |= {
        "MLFLOW_TRACKING_URI": tracking_uri, "SOFTPROMPT_ENSEMBLES": "rte-ensemble@production",
        "SOFTPROMPT_HOME": os.environ.get("SOFTPROMPT_HOME", str(Path.home() / ".cache/softprompt"))}
    return config


def test_campaign_lands_on_both_nodes_and_serve_deploy_answers(cluster, tmp_path, postgres_uri):
    address, dashboard, env = cluster
    nodes = _cluster_nodes(env)
    assert len(nodes) == 2 and sum("second_node" in node["resources"] for node in nodes) == 1

    launched = subprocess.run([str(BIN / "softprompt"), "search", "launch", str(_campaign_file(tmp_path, postgres_uri))],
                              env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    tracking = Store(postgres_uri)
    runs = tracking.trial_runs("two-nodes")
    assert len(runs) == 2 and {run.status for run in runs} == {names.FINISHED}
    placed = {run.tags[names.TAG_NODE_ID] for run in runs}
    assert placed == {node["id"] for node in nodes}, "the trials did not use both nodes"

    port = quiet_port()
    config_path = tmp_path / "serve-config.yaml"
    config_path.write_text(yaml.safe_dump(_generated_serve_config(postgres_uri, port), sort_keys=False))
    deployed = subprocess.run([str(BIN / "serve"), "deploy", str(config_path), "--address", dashboard],
                              env=env, capture_output=True, text=True, timeout=180)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(base, deadline=time.monotonic() + 300, env=env, dashboard=dashboard)
        records = [{"premise": "The cat sat on the mat.", "hypothesis": "A cat is sitting."},
                   {"premise": "It rained all day in Paris.", "hypothesis": "Paris was dry."}]
        answer = httpx.post(f"{base}/v1/predict", json={"task": "rte", "inputs": records}, timeout=120)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["ensemble"]["name"] == "rte-ensemble" and len(body["predictions"]) == 2
        for prediction in body["predictions"]:
            assert len(prediction["members"]) == 2 and sum(prediction["votes"].values()) == 2
            assert prediction["label"] in prediction["votes"]
        loaded = httpx.get(f"{base}/v1/ensembles", timeout=30).json()
        members = {member["run_id"] for entry in loaded["ensembles"] for member in entry["members"]}
        assert members <= {run.run_id for run in runs} and len(members) == 2
    finally:
        subprocess.run([str(BIN / "serve"), "shutdown", "--yes", "--address", dashboard], env=env,
                       capture_output=True, timeout=180)


def _wait_until_serving(base: str, *, deadline: float, env: dict, dashboard: str) -> None:
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            status = subprocess.run([str(BIN / "serve"), "status", "--address", dashboard], env=env,
                                    capture_output=True, text=True)
            pytest.fail(f"the deployed application never answered /healthz:\n{status.stdout}{status.stderr}")
        time.sleep(2)
