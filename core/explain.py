"""Interpretability (paper §7): the vocabulary tokens nearest to each prompt position by cosine
similarity to the frozen model's input embeddings."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .models.base import FrozenModel

CHUNK = 16_384  # vocabulary rows embedded at a time (Gemma's 262k x 640 table at once is 670 MB)


class Neighbour(NamedTuple):
    token_id: int
    token: str
    cosine: float


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_tokens(model: FrozenModel, prompt: np.ndarray, *, top_k: int = 5) -> list[list[Neighbour]]:
    """For each of the P rows of `prompt` [P, E], its `top_k` nearest ordinary tokens."""
    candidates = np.asarray(model.tokenizer.ordinary_ids())
    queries = _unit(jnp.asarray(prompt, jnp.float32))
    best_scores = jnp.full((prompt.shape[0], 0), -jnp.inf)
    best_ids = jnp.zeros((prompt.shape[0], 0), jnp.int32)
    for start in range(0, candidates.size, CHUNK):
        ids = jnp.asarray(candidates[start: start + CHUNK], jnp.int32)
        vocab = _unit(model.ops.embed(model.params, ids).astype(jnp.float32))
        scores = jnp.concatenate([best_scores, queries @ vocab.T], axis=1)
        pool = jnp.concatenate([best_ids, jnp.broadcast_to(ids, (prompt.shape[0], ids.size))], axis=1)
        best_scores, picked = jax.lax.top_k(scores, min(top_k, scores.shape[1]))
        best_ids = jnp.take_along_axis(pool, picked, axis=1)
    decode = model.tokenizer.decode
    return [[Neighbour(int(i), decode([int(i)]), float(s)) for i, s in zip(row_ids, row_scores)]
            for row_ids, row_scores in zip(np.asarray(best_ids), np.asarray(best_scores))]
