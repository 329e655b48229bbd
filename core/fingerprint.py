"""A model's fingerprint: a stable hash of its architecture config and its weights.

A prompt records the fingerprint of the model it was trained on and is only ever loaded onto a
model with the same fingerprint. Hashing a 268M-parameter model takes a second or two, so the
result is cached in a file beside the weights, keyed by the weight file's size and mtime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np


def compute_fingerprint(config: Mapping[str, Any], params: Any) -> str:
    """sha256 over the canonical JSON of `config`, then every leaf's path, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes (read in 1 MiB blocks: model files are hundreds of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_fingerprint(config: Mapping[str, Any], params: Any, weights_file: Path) -> str:
    """`compute_fingerprint`, remembered in `<weights_file>.fingerprint.json` while the file is
    unchanged — one entry per config (a float32 and a bfloat16 load of one file differ)."""
    weights_file = Path(weights_file)
    stat = weights_file.stat()
    file_key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    config_key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    cache = weights_file.with_name(weights_file.name + ".fingerprint.json")
    entries: dict[str, str] = {}
    try:
        stored = json.loads(cache.read_text())
        if stored.get("file") == file_key and isinstance(stored.get("fingerprints"), dict):
            entries = stored["fingerprints"]
    except (OSError, json.JSONDecodeError, AttributeError):
        pass  # a missing or damaged cache is recomputed, never trusted
    if config_key not in entries:
        entries[config_key] = compute_fingerprint(config, params)
        try:
            temporary = cache.with_name(cache.name + ".tmp")
            temporary.write_text(json.dumps({"file": file_key, "fingerprints": entries}))
            temporary.replace(cache)
        except OSError:
            pass  # a read-only model folder: fingerprint every load instead
    return entries[config_key]
