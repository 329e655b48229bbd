"""JAX's persistent compilation cache, shared by processes: trials of a campaign and Serve
replicas compile each distinct function once and load it from disk afterwards."""

from __future__ import annotations

import os
from pathlib import Path


def use_compilation_cache(directory: str | os.PathLike | None) -> None:
    """Every compilation of this process goes to (and comes from) `directory` (None: no cache)."""
    if directory is None:
        return
    import jax

    Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
