"""Frozen models by name: `load_model("gemma3-270m")`, `load_model("t5-tiny-random")`, or a path.

Families: `t5` (encoder-decoder, the paper's model) and the shared decoder (`decoder.py`): Llama,
Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3, from Hugging Face folders or GGUF files. Each family
implements `FamilyOps` (see `base.py`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from .base import FamilyOps, FrozenModel, Tokenizer

BUILTIN_MODELS = ("gemma3-270m", "smollm2-135m", "t5-tiny-random")
DTYPES = ("float32", "bfloat16")


class UnknownModelError(ValueError):
    """A model name that is neither built in nor a loadable path."""


@functools.lru_cache(maxsize=2)
def load_model(name: str, *, dtype: str = "float32") -> FrozenModel:
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
        return load_gemma3(name, dtype=dtype)
    if name == "t5-tiny-random":
        from .tiny_t5 import load_t5_tiny_random
        return load_t5_tiny_random(dtype=dtype)
    path = Path(name)
    if path.suffix == ".gguf" and path.is_file():
        from .gemma3_loading import load_gemma3
        return load_gemma3(str(path), dtype=dtype)
    if (path / "config.json").is_file():
        model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
        if model_type == "t5":
            from .t5_loading import load_t5
            return load_t5(path, dtype=dtype)
        from .decoder_config import MODEL_TYPES, SUPPORTED
        if model_type in MODEL_TYPES:
            from .hf_loading import load_hf_directory
            return load_hf_directory(path, dtype=dtype)
        raise UnknownModelError(f"{path}/config.json: model_type {model_type!r} is not supported; "
                                f"{SUPPORTED}, t5")
    raise UnknownModelError(
        f"unknown model {name!r}: use one of {', '.join(BUILTIN_MODELS)}, a .gguf file, "
        "or a Hugging Face-format directory (config.json + safetensors + tokenizer)")


__all__ = ["BUILTIN_MODELS", "FamilyOps", "FrozenModel", "Tokenizer", "UnknownModelError", "load_model"]
