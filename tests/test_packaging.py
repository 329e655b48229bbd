"""The installed layout: layers import as `softprompt.<layer>`, never as bare top-level modules."""

from __future__ import annotations

import subprocess
import sys

LAYERS = ("core", "store", "search", "ensemble", "serve")


def test_layers_are_subpackages_and_nothing_bare_is_installed(tmp_path):
    script = (
        "import importlib, importlib.util, sys\n"
        f"for layer in {LAYERS!r}:\n"
        "    assert importlib.util.find_spec(layer) is None, layer + ' importable bare'\n"
        "    spec = importlib.util.find_spec('softprompt.' + layer)\n"
        "    assert spec is not None and spec.origin.endswith(layer + '/__init__.py'), spec\n"
        "print('ok')\n")
    # Run outside the repository so the working directory cannot hide a missing mapping.
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
