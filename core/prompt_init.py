"""Soft-prompt initialisers (paper §3.2 and §7): pure functions returning a [length, d_model] array.

Each takes an explicit `jax.random` key so a seed reproduces the prompt exactly.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .models.base import FrozenModel

MOST_COMMON_TOKENS = 5_000  # the paper samples from the 5,000 most common vocabulary entries
INITIALISERS = ("random_uniform", "sampled_vocab", "class_labels", "from_text", "from_file")


class PromptInitError(ValueError):
    """An initialiser was asked for something it cannot do (no label words, empty text, ...)."""


def random_uniform(key: jax.Array, *, length: int, d_model: int, scale: float = 0.5) -> jax.Array:
    """Uniform over [-scale, scale] — symmetric, unlike `jax.nn.initializers.uniform(scale)`,
    which draws from [0, scale)."""
    return jax.random.uniform(key, (length, d_model), jnp.float32, minval=-scale, maxval=scale)


def _embed(model: FrozenModel, ids: Sequence[int] | np.ndarray) -> jax.Array:
    """[n] token ids -> [n, E] float32 input embeddings of the frozen model."""
    ids = jnp.asarray(np.asarray(ids, dtype=np.int32))
    return model.ops.embed(model.params, ids).astype(jnp.float32)


def sampled_vocab(key: jax.Array, model: FrozenModel, *, length: int) -> jax.Array:
    """Embeddings of `length` tokens drawn without replacement (with replacement only when
    `length` exceeds the pool) from the 5,000 most common ordinary tokens: [length, E]."""
    pool = np.asarray(model.tokenizer.ordinary_ids())[:MOST_COMMON_TOKENS]
    if pool.size == 0:
        raise PromptInitError(f"model {model.name!r}: tokenizer reports no ordinary tokens to sample")
    chosen = jax.random.choice(key, pool.size, (length,), replace=length > pool.size)
    return _embed(model, pool[np.asarray(chosen)])


def _mean_embedding(model: FrozenModel, text: str) -> jax.Array:
    """The mean of a text's sub-token embeddings: [E]. No special tokens (never `<bos>`)."""
    ids = model.tokenizer.encode(text)
    if not ids:
        raise PromptInitError(f"label word {text!r} encodes to no tokens")
    return _embed(model, ids).mean(axis=0)


def class_labels(key: jax.Array, model: FrozenModel, *, length: int,
                 label_words: Sequence[str]) -> jax.Array:
    """One position per class label (the mean of its sub-token embeddings), then sampled vocab.

    With fewer positions than labels, the first `length` labels are used. Returns [length, E].
    """
    if not label_words:
        raise PromptInitError("class_labels initialisation needs a task with label words")
    labels = jnp.stack([_mean_embedding(model, word) for word in label_words[:length]])
    rest = length - labels.shape[0]
    if rest == 0:
        return labels
    return jnp.concatenate([labels, sampled_vocab(key, model, length=rest)])


def from_text(key: jax.Array, model: FrozenModel, *, length: int, text: str) -> jax.Array:
    """The embeddings of a text's tokens (no special tokens), cut to `length` or filled up with
    sampled vocab — as the paper initialises ReCoRD and WSC from task words. Returns [length, E]."""
    ids = model.tokenizer.encode(text)[:length]
    if not ids:
        raise PromptInitError("from_text initialisation needs a non-empty text")
    words = _embed(model, ids)
    rest = length - words.shape[0]
    if rest == 0:
        return words
    return jnp.concatenate([words, sampled_vocab(key, model, length=rest)])
