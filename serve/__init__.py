"""Serving voted soft-prompt ensembles over HTTP with Ray Serve (docs/serving.md).

`config.ServeConfig` holds every serving setting; `app.build_app` / `app.app_builder` build the
application; `lifecycle` starts it, waits until it is healthy and stops it; `softprompt serve`
does all of that from the command line.
"""

from softprompt.core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {"build_app": "app", "app_builder": "app",
                                                        "ServeConfig": "config", "serving": "lifecycle"})
