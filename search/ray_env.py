"""How softprompt starts or joins Ray: local and quiet unless the environment says otherwise."""

from __future__ import annotations

import os
import warnings

RAY_ENV_DEFAULTS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",   # Ray's own listeners bind 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
}


def apply_ray_env_defaults() -> None:
    """Sets each of RAY_ENV_DEFAULTS unless the environment already has it, and silences JAX's
    warning at fork: Ray starts its processes with fork + exec, which the warning is not about."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)


VERBOSE_ENV = "SOFTPROMPT_VERBOSE"   # "1": Ray's own INFO lines and the workers' output on the terminal


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def ray_log_options() -> dict:
    """`ray.init` keywords: unless verbose, Ray's INFO lines (raylet, controller, proxy) and the
    workers' output stay in the session's log folder instead of interleaving with ours."""
    if verbose():
        return {}
    import logging

    for name in ("ray", "ray.serve", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return {"logging_level": "warning", "log_to_driver": False}


def quiet_serve_logger() -> None:
    """Serve sets its driver-side logger to INFO when it starts: back to WARNING unless verbose."""
    if not verbose():
        import logging

        logging.getLogger("ray.serve").setLevel(logging.WARNING)


# Ray's documented default; a cluster started with --temp-dir keeps them elsewhere.
RAY_LOGS = "/tmp/ray/session_latest/logs"
