"""Packaging: the wheel installs into a fresh virtual environment with the lock (constraints.txt)
and works there on its own: every layer imports as `softprompt.*`, nothing bare lands in
site-packages, the installed versions are the lock's, and a command runs on the shipped data."""

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


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("packaging")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(folder / "dist"), str(REPOSITORY)], check=True, capture_output=True, timeout=300)
    [wheel] = (folder / "dist").glob("softprompt-*.whl")
    venv = folder / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # --no-compile: the checks below import a small part of the dependencies, so compiling only that
    # (lazily, on import) saves most of this fixture's time
    done = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-compile", "-c", str(LOCK), str(wheel)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_the_wheel_installs_with_the_lock_and_runs_on_its_own(fresh_venv, tmp_path):
    python = str(fresh_venv / "bin/python")
    check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout
    listed = subprocess.run([python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                            timeout=120, check=True)
    pins = _lock()
    installed = {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(listed.stdout)}
    bootstrap = {"pip", "setuptools", "wheel"}      # the venv's own tools, not the package's dependencies
    drifted = {n: (v, pins[n]) for n, v in installed.items()
               if n in pins and n not in bootstrap and v.split("+")[0] != pins[n]}
    assert not drifted and installed["softprompt"] == "0.1.0"
    layers = ("core", "store", "search", "ensemble", "serve")
    probe = ("import importlib.util, json, softprompt; "
             f"print(json.dumps([importlib.util.find_spec(n) is None for n in {list(layers)!r}] + "
             f"[importlib.util.find_spec('softprompt.' + n).origin for n in {list(layers)!r}]))")
    found = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=300,
                                      cwd=tmp_path, check=True).stdout)
    assert found[:5] == [True] * 5, "a layer landed bare in site-packages"
    assert all(str(fresh_venv) in origin for origin in found[5:]), "imported from outside the fresh venv"
    evaluated = subprocess.run([str(fresh_venv / "bin/softprompt"), "evaluate", "--task", "sst2", "--model",
                                "t5-tiny-random", "--max-examples", "8", "--text-prompt", "{sentence} Sentiment:"],
                               capture_output=True, text=True, timeout=600, cwd=tmp_path)
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
