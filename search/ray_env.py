"""How softprompt starts or joins Ray: local and quiet unless the environment says otherwise."""

from __future__ import annotations

import os

RAY_ENV_DEFAULTS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",   # Ray's own listeners bind 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}


def apply_ray_env_defaults() -> None:
    """Sets each of RAY_ENV_DEFAULTS unless the environment already has it."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
