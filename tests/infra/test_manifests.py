"""Every infra manifest parses, and its image, entrypoints and versions agree with pyproject.toml
and the lock (constraints.txt)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
RAY = next(line for line in (ROOT / "constraints.txt").read_text().splitlines()   # the lock's exact Ray
           if line.startswith("ray==")).split("==")[1]
MANIFESTS = sorted(INFRA.rglob("*.yaml"))


def _documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _walk(node, key: str):
    """Every value stored under `key` anywhere in a parsed document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, key)


def test_there_are_cluster_kuberay_and_mlflow_manifests():
    names = {p.relative_to(INFRA).as_posix() for p in MANIFESTS}
    assert {"cluster/gpu.yaml", "cluster/tpu.yaml", "kuberay/rayjob-search.yaml", "kuberay/rayservice.yaml",
            "mlflow/mlflow-server.yaml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_manifest_parses_and_pins_agree(path):
    documents = _documents(path)
    assert documents
    for document in documents:
        for image in _walk(document, "image"):
            if "softprompt" in image:
                assert image.split(":")[1].split("-")[0] == VERSION, image
        for ray_version in _walk(document, "rayVersion"):
            assert ray_version == RAY
        for config in _walk(document, "serveConfigV2"):
            applications = yaml.safe_load(config)["applications"]
            module, attribute = applications[0]["import_path"].split(":")
            assert subprocess.run([sys.executable, "-c", f"import importlib.util as u; "
                                   f"assert u.find_spec({module!r})"], capture_output=True).returncode == 0
        for entrypoint in _walk(document, "entrypoint"):
            command = entrypoint.split()
            assert command[:3] == ["softprompt", "search", "launch"]
            assert (ROOT / command[3].removeprefix("/app/")).exists(), command[3]


def test_docker_base_image_is_the_pinned_ray():
    bases = re.findall(r"rayproject/ray:([\d.]+)-py311", (INFRA / "Dockerfile").read_text())
    assert bases and set(bases) == {RAY}


def test_rayservice_is_generated_from_the_real_application():
    done = subprocess.run([sys.executable, str(INFRA / "generate_rayservice.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_no_secret_in_a_manifest_and_no_open_listener_without_a_policy(path):
    text = path.read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())       # comments may show placeholders
    assert not re.search(r"://[^/\s:@]+:[^@\s]+@", code), "a URI with a password"
    documents = _documents(path)
    assert all(host == "127.0.0.1" for document in documents for host in _walk(document, "dashboard-host"))
    if "0.0.0.0" in code:
        kinds = {document.get("kind") for document in documents}
        assert "NetworkPolicy" in kinds and "0.0.0.0" in text.split("apiVersion", 1)[0], \
            "a listener on 0.0.0.0 needs a NetworkPolicy and a comment saying why"


SERVICES = ["rayservice.yaml", "rayservice-8gpu.yaml"]       # generated: the CPU default, the multi-GPU variant


def _deployments(service: dict) -> dict[str, dict]:
    """A RayService's Serve deployments, by name."""
    [application] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    return {deployment["name"]: deployment for deployment in application["deployments"]}


@pytest.mark.parametrize("name", SERVICES)
def test_the_serving_token_comes_from_a_secret(name):
    [service, _] = _documents(INFRA / "kuberay" / name)
    containers = [c for group in [service["spec"]["rayClusterConfig"]["headGroupSpec"],
                                  *service["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
                  for c in group["template"]["spec"]["containers"]]
    for container in containers:
        [token] = [e for e in container["env"] if e["name"] == "SOFTPROMPT_API_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"]["name"] == "softprompt-serving"


@pytest.mark.parametrize("name", SERVICES)
def test_pods_outlive_the_grace_period_of_requests_in_flight(name):
    """Every serving pod has a preStop hook and a termination grace that covers the hook's wait
    and the deployment's own graceful shutdown, so no request in flight is cut by SIGKILL."""
    [service, _] = _documents(INFRA / "kuberay" / name)
    deployments = _deployments(service)
    assert set(deployments) == {"Front", "SoftPromptServer"}          # the HTTP ingress, the model
    grace = max(deployment["graceful_shutdown_timeout_s"] for deployment in deployments.values())
    assert all(deployment["graceful_shutdown_timeout_s"] >= 30 and deployment["graceful_shutdown_wait_loop_s"] <= 1
               for deployment in deployments.values())
    cluster = service["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        for container in pod["containers"]:
            hook = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
            waited = sum(int(s) for s in re.findall(r"sleep (\d+)", hook))
            assert waited > 0 and pod["terminationGracePeriodSeconds"] > waited + (0 if "drain" in hook else grace)


def test_the_multi_gpu_variant_gives_each_replica_a_worker_pods_eight_gpus():
    """An 8B model: each replica asks Ray for 8 GPUs (`devices: 8`, so its weights split over them),
    a worker pod has 8, and the cluster launcher example has an 8-GPU node type."""
    [service, _] = _documents(INFRA / "kuberay" / "rayservice-8gpu.yaml")
    [application] = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert _deployments(service)["SoftPromptServer"]["ray_actor_options"]["num_gpus"] == 8
    assert _deployments(service)["Front"]["ray_actor_options"]["num_cpus"] == 0     # the front needs none
    assert application["runtime_env"]["env_vars"]["SOFTPROMPT_DEVICES"] == "8"      # the replicas' placement
    [group] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    [container] = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8 and group["rayStartParams"]["num-gpus"] == "8"
    [cpu_service, _] = _documents(INFRA / "kuberay" / "rayservice.yaml")
    assert "num_gpus" not in _deployments(cpu_service)["SoftPromptServer"]["ray_actor_options"]
    nodes = yaml.safe_load((INFRA / "cluster" / "gpu.yaml").read_text())["available_node_types"]
    assert any(node["resources"].get("GPU", 0) >= 8 for node in nodes.values())
