"""Every docstring example in the package runs and prints what it shows (examples that need a
model or a running service are marked `# doctest: +SKIP`)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

LAYERS = ("softprompt", "softprompt.core", "softprompt.store", "softprompt.search", "softprompt.ensemble",
          "softprompt.serve")


def _modules() -> list[str]:
    """Every module of every layer (the layers are folders of their own, mapped into `softprompt`)."""
    names = set(LAYERS)
    for layer in LAYERS:
        package = importlib.import_module(layer)
        names |= {info.name for info in pkgutil.walk_packages(package.__path__, f"{layer}.")}
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
