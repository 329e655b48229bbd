"""Serving voted soft-prompt ensembles over HTTP with Ray Serve (docs/serving.md).

`app.build_app` / `app.app_builder` build the application; `softprompt serve` runs it.
"""

from softprompt.core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"build_app": "app", "app_builder": "app"})
