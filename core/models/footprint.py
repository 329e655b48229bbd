"""A decoder's size from its config.json alone, no weights: what `softprompt model info` prints for
a config file, and what a sharding planner starts from."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp

from .decoder import Decoder
from .hf_loading import read_json
from .decoder_config import config_from_hf

BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2}


def config_footprint(config_path: Path | str, *, prompt_length: int) -> dict:
    """config.json -> family, sizes, frozen parameter count (as loaded: a tied embedding counts
    once), bytes of the frozen weights at each dtype, and the prompt's trained parameters
    (prompt_length x d_model, the paper's Table 4)."""
    path = Path(config_path)
    config = config_from_hf(read_json(path), source=str(path))
    embeds = jax.ShapeDtypeStruct((1, 1, config.d_model), jnp.float32)
    shapes = jax.eval_shape(Decoder(config).init, jax.random.key(0), embeds, jax.ShapeDtypeStruct((1, 1), bool))
    frozen = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
    trainable = prompt_length * config.d_model
    return {"model": str(path), "family": config.family, "d_model": config.d_model, "layers": config.num_layers,
            "vocab_size": config.vocab_size, "frozen_params": frozen,
            "frozen_bytes": {dtype: frozen * size for dtype, size in BYTES_PER_PARAM.items()},
            "trainable_params": trainable, "total_params": frozen + trainable,
            "percent_trainable": 100.0 * trainable / (frozen + trainable)}
