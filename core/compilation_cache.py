"""JAX's persistent compilation cache, shared by processes: trials of a campaign and Serve
replicas compile each distinct function once and load it from disk afterwards."""

from __future__ import annotations

import os
from pathlib import Path


CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"   # JAX's own setting, read by every JAX process


def cache_dir_or(default: str | os.PathLike) -> str:
    """Where a campaign or the demo keeps compilations when not told: `$JAX_COMPILATION_CACHE_DIR`
    when set (the user's cache, shared with everything else they run), else `default`."""
    return os.environ.get(CACHE_ENV) or str(default)


def use_compilation_cache(directory: str | os.PathLike | None) -> None:
    """Every compilation of this process goes to (and comes from) `directory` (None: no cache)."""
    if directory is None:
        return
    import jax

    Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
