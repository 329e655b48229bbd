"""The one convention for a package's public surface: a curated list of names, each imported from
its module on first use (PEP 562), so importing a package costs nothing until a name is used and
`import softprompt` loads neither JAX, Ray nor MLflow."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list], list]:
    """`(__getattr__, __dir__, __all__)` for `package`, whose public names `exports` maps to the
    submodule (relative, e.g. `"models"` or `"models.base"`) that defines each.

    >>> getattr_, dir_, all_ = lazy_exports("softprompt.core", {"load_model": "models"})
    >>> all_
    ['load_model']
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    def __dir__() -> list:
        return names

    return __getattr__, __dir__, names
