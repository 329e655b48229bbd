"""The layers' dependencies point downwards, read from the imports of every production module
(function-local imports included): shell -> serve -> ensemble -> {core, store}; search -> {core,
store}; store -> core; core imports nothing above it, no Ray and no MLflow; only store/ imports
MLflow; nothing below the shell imports the command line or the demo."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("core", "store", "search", "ensemble", "serve", "softprompt")
ALLOWED = {   # layer -> the softprompt layers it may import
    "core": {"core"},
    "store": {"store", "core"},
    "search": {"search", "core", "store"},
    "ensemble": {"ensemble", "core", "store"},
    "serve": {"serve", "ensemble", "core", "store"},
    "softprompt": set(LAYERS),
}
SHELL_MODULES = ("softprompt.cli", "softprompt.demo", "softprompt._cli")


def imports_of(path: Path) -> list[str]:
    """Every module a file imports, absolute or resolved from relative, anywhere in the file."""
    package = ["softprompt", path.parent.relative_to(ROOT).parts[0]] if path.parent != ROOT / "softprompt" else ["softprompt"]
    package += list(path.parent.relative_to(ROOT).parts[1:])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append(".".join(base + ([node.module] if node.module else [])))
            else:
                found.append(node.module)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "softprompt":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[:-1] else "softprompt"


MODULES = sorted(path for layer in LAYERS for path in (ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_downwards(path):
    layer = path.relative_to(ROOT).parts[0]
    imported = imports_of(path)
    upward = sorted({m for m in imported if layer_of(m) and layer_of(m) not in ALLOWED[layer]})
    assert not upward, f"{layer}/ may import only {sorted(ALLOWED[layer])}: {upward}"
    if layer != "store":
        assert not [m for m in imported if m.split(".")[0] == "mlflow"], "only store/ imports mlflow"
    if layer == "core":
        assert not [m for m in imported if m.split(".")[0] == "ray"], "core/ imports no Ray"
    if layer != "softprompt" or path.name == "__init__.py":
        assert not [m for m in imported if m.startswith(SHELL_MODULES)], "only the shell imports the CLI or demo"


def test_the_reader_sees_relative_and_local_imports():
    modules = imports_of(ROOT / "ensemble" / "build.py")
    assert "softprompt.ensemble.loaded" in modules and "softprompt.store" in modules
    assert any(m.startswith("softprompt.ensemble.") for m in imports_of(ROOT / "serve" / "batcher.py"))
    assert "mlflow.pyfunc" in imports_of(ROOT / "store" / "registry.py")


def test_import_softprompt_is_light():
    """`import softprompt` and every layer's package load neither JAX, Ray nor MLflow (their public
    names import on first use), and take well under 2 seconds."""
    import subprocess
    import sys

    probe = ("import time; start = time.perf_counter()\n"
             "import softprompt, softprompt.core, softprompt.store, softprompt.search, softprompt.ensemble, "
             "softprompt.serve, softprompt.cli\n"
             "import sys; print(time.perf_counter() - start, sorted({'jax', 'ray', 'mlflow'} & set(sys.modules)))")
    seconds, heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                    timeout=60).stdout.split(" ", 1)
    assert heavy.strip() == "[]" and float(seconds) < 2.0


def test_every_public_name_resolves():
    import importlib

    for package in ("softprompt", "softprompt.core", "softprompt.store", "softprompt.search",
                    "softprompt.ensemble", "softprompt.serve"):
        module = importlib.import_module(package)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join((["softprompt"] if parts[0] != "softprompt" else []) + parts)


def test_no_module_imports_itself_through_others():
    """No import cycle between modules (function-local imports included): a cycle means two modules
    are one idea split in two, or a third module is missing. Packages' `__init__` re-exports are
    lazy and do not count."""
    graph = {_module_name(path): path for path in MODULES if path.name != "__init__.py"}
    edges = {name: sorted({m for m in imports_of(path) if m in graph and m != name}) for name, path in graph.items()}
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in edges[name]:
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(path[path.index(nxt):] + [name, nxt]
                                                                      if nxt in path else [name, nxt])
            if nxt not in state:
                visit(nxt, path + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
