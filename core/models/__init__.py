"""Frozen models by name: `load_model("gemma3-270m")`, `load_model("t5-tiny-random")`, or a path.

Families: `t5` (encoder-decoder, the paper's model) and the shared decoder (`decoder.py`): Llama,
Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3, from Hugging Face folders or GGUF files. Each family
implements `FamilyOps` (see `base.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import FamilyOps, FrozenModel, Tokenizer

if TYPE_CHECKING:
    from ..sharding import Placement

BUILTIN_MODELS = ("gemma3-270m", "smollm2-135m", "t5-tiny-random")
DTYPES = ("float32", "bfloat16")
AUTO_DTYPE = "auto"   # bfloat16 where the hardware multiplies it natively, else float32 (`native_dtype`)
_NATIVE_BF16_CPU_FLAGS = re.compile(r"\b(amx_bf16|avx512_bf16)\b")


class UnknownModelError(ValueError):
    """A model name that is neither built in nor a loadable path."""


@functools.cache
def native_dtype() -> str:
    """The frozen weights' dtype that `auto` means here: bfloat16 on GPUs and TPUs and on CPUs with
    bfloat16 instructions (AMX, AVX512-BF16); float32 on CPUs that would emulate bfloat16."""
    import jax

    if jax.default_backend() != "cpu":
        return "bfloat16"
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if _NATIVE_BF16_CPU_FLAGS.search(cpu) else "float32"


def resolve_dtype(dtype: str) -> str:
    """`dtype` with `auto` replaced by `native_dtype()`."""
    return native_dtype() if dtype == AUTO_DTYPE else dtype


def load_model(name: str, *, dtype: str = "float32", cached: bool = True,
               placement: Placement | None = None, host: bool = False) -> FrozenModel:
    """A frozen model by built-in name, `.gguf` file, or Hugging Face-format directory; `dtype`
    float32, bfloat16 or auto (see `native_dtype`). Cached in-process (the last two) unless
    `cached=False` (a caller that hands the weights on and keeps no copy). Not cached either:
    `placement` (a `core.sharding.Placement`): the weights go onto its mesh as they are read
    (decoder families), so no device ever holds the whole model; `host`: numpy weights that never
    go to a device (decoder families; T5 is copied back), for a campaign driver that only
    fingerprints them and hands them to Ray's object store."""
    reference, dtype = model_reference(name), resolve_dtype(dtype)
    if host:
        import jax
        import numpy as np

        model = _load_model.__wrapped__(reference, dtype=dtype, put=lambda path, array: array)
        return dataclasses.replace(model, params=jax.tree_util.tree_map(np.asarray, model.params))   # T5's too
    if placement is None:
        return (_load_model if cached else _load_model.__wrapped__)(reference, dtype=dtype)
    from ..sharding import place_model

    model = _load_model.__wrapped__(reference, dtype=dtype, put=placement.weight)
    return place_model(model, placement)      # T5 loads whole, then is split (a no-op for placed weights)


def model_reference(name: str) -> str:
    """`name` as runs, prompts and ensembles record it: a built-in name unchanged, a file or folder
    that exists here as an absolute path (`~` expanded) — trials, Serve replicas and later commands
    run in other working directories, where a relative path names nothing.

    >>> model_reference("t5-tiny-random")
    't5-tiny-random'
    """
    if name in BUILTIN_MODELS:
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if os.path.exists(path) else name


@functools.lru_cache(maxsize=2)
def _load_model(name: str, *, dtype: str = "float32", put: Any = None) -> FrozenModel:
    """A frozen model by built-in name, `.gguf` file, or Hugging Face-format directory.

    Loaded models are cached in-process (the last two), so repeated calls are free.

    Example:
      >>> model = load_model("t5-tiny-random")
      >>> model.family, model.d_model
      ('t5', 64)
    """
    if dtype not in DTYPES:
        raise UnknownModelError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if name in ("gemma3-270m", "smollm2-135m"):  # GGUF files shipped on PyPI (gemma3_loading.NAMED_MODELS)
        from .gemma3_loading import load_gemma3
        return load_gemma3(name, dtype=dtype, put=put)
    if name == "t5-tiny-random":
        from .tiny_t5 import load_t5_tiny_random
        return load_t5_tiny_random(dtype=dtype)
    path = Path(name)
    if path.suffix == ".gguf" and path.is_file():
        from .gemma3_loading import load_gemma3
        return load_gemma3(str(path), dtype=dtype, put=put)
    if (path / "config.json").is_file():
        model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
        if model_type == "t5":
            from .t5_loading import load_t5
            return load_t5(path, dtype=dtype)
        from .decoder_config import MODEL_TYPES, SUPPORTED
        if model_type in MODEL_TYPES:
            from .hf_loading import load_hf_directory
            return load_hf_directory(path, dtype=dtype, put=put)
        raise UnknownModelError(f"{path}/config.json: model_type {model_type!r} is not supported; "
                                f"{SUPPORTED}, t5")
    check_model_name(name)
    raise UnknownModelError(f"{name}: not a model softprompt can load")   # check_model_name passed: not reached


def check_model_name(name: str) -> None:
    """Raises UnknownModelError, naming the choices, unless `name` is a built-in model, a `.gguf`
    file or a folder with a `config.json` — without loading anything (a campaign checks its model
    before it starts)."""
    path = Path(name).expanduser()
    if name in BUILTIN_MODELS or (path.suffix == ".gguf" and path.is_file()) or (path / "config.json").is_file():
        return
    raise UnknownModelError(
        f"unknown model {name!r}: use one of {', '.join(BUILTIN_MODELS)}, a .gguf file, "
        "or a Hugging Face-format directory (config.json + safetensors + tokenizer)")


__all__ = ["AUTO_DTYPE", "BUILTIN_MODELS", "FamilyOps", "FrozenModel", "Tokenizer", "UnknownModelError", "check_model_name",
           "load_model", "model_reference", "native_dtype", "resolve_dtype"]
