"""T5 as a frozen model for prompt tuning: T5 1.1, LM-adapted T5 1.1 and the original T5.

Hand-written in Flax linen because no ready-made JAX T5 is usable here: transformers 5 dropped
its Flax models, T5X/flaxformer bring TensorFlow, seqio and gin, and the `gemma` library (not usable
either, see docs/architecture.md) has no T5. `tests/core/test_t5.py` proves this code equal to the
`transformers` PyTorch T5 on the same weights.

Architecture (from a Hugging Face `config.json`): pre-norm blocks with RMS norm (no bias, no mean);
attention without 1/sqrt(d_kv) scaling, plus a relative position bias (log-spaced buckets,
bidirectional in the encoder, causal in the decoder) that each stack shares across its layers;
feed-forward `gated-gelu` (T5 1.1) or `relu` (original T5); an untied `lm_head` (T5 1.1) or logits
through the shared embedding after scaling the decoder output by d_model**-0.5 (original T5).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from .base import Params

ACTIVATIONS = {"relu": jax.nn.relu, "silu": jax.nn.silu,
               "gelu": functools.partial(jax.nn.gelu, approximate=False),
               "gelu_new": functools.partial(jax.nn.gelu, approximate=True)}  # tanh approximation


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The architecture, as plain JSON-able fields (hashed into the fingerprint)."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"     # "relu" | "gated-gelu" | "gated-<act>" | "<act>"
    tie_word_embeddings: bool = True    # no lm_head: logits through the shared embedding
    scale_decoder_outputs: bool = True  # decoder output * d_model**-0.5 before the projection
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0

    @classmethod
    def from_hf(cls, hf: dict, *, has_lm_head: bool) -> "T5Config":
        """From a Hugging Face config; `has_lm_head`: the checkpoint holds `lm_head.weight`.

        Hub configs mark T5 1.1 with `tie_word_embeddings: false` (untied head, no output scaling);
        transformers 5 instead writes `tie_word_embeddings: true, scale_decoder_outputs: false` and
        keeps an untied `lm_head.weight` in the file, so the file decides whether a head exists.
        """
        names = {field.name for field in dataclasses.fields(cls)} - {"tie_word_embeddings",
                                                                      "scale_decoder_outputs"}
        fields = {name: hf[name] for name in names if hf.get(name) is not None}
        fields.setdefault("num_decoder_layers", hf["num_layers"])
        declared_tied = hf.get("tie_word_embeddings", True) is not False
        return cls(**fields, tie_word_embeddings=declared_tied and not has_lm_head,
                   scale_decoder_outputs=hf.get("scale_decoder_outputs", declared_tied))

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self):
        name = self.feed_forward_proj.removeprefix("gated-")
        return ACTIVATIONS["gelu_new" if self.feed_forward_proj == "gated-gelu" else name]


def relative_position_buckets(query_length: int, key_length: int, *, bidirectional: bool,
                              num_buckets: int, max_distance: int) -> np.ndarray:
    """[Q, K] int32 bucket of each (query, key) offset: exact for small distances, log-spaced up
    to `max_distance`, one bucket beyond. Computed in float32 like the reference implementations so
    that bucket boundaries agree; static shapes, so this runs once per trace in numpy."""
    relative = np.arange(key_length)[None, :] - np.arange(query_length)[:, None]  # key - query
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0) * num_buckets
        distance = np.abs(relative)
    else:
        distance = np.maximum(-relative, 0)
    max_exact = num_buckets // 2
    log_ratio = (np.log(np.maximum(distance, 1).astype(np.float32) / max_exact)
                 / np.float32(math.log(max_distance / max_exact)))
    large = np.minimum(max_exact + (log_ratio * (num_buckets - max_exact)).astype(np.int32),
                       num_buckets - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class RMSNorm(nn.Module):
    """x / rms(x) * scale, computed in float32. [..., E] -> [..., E]."""

    epsilon: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        x = x.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.epsilon)
        return jnp.asarray(scale, self.dtype) * x.astype(self.dtype)


class Attention(nn.Module):
    """Multi-head attention without score scaling; softmax in float32."""

    num_heads: int
    d_kv: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, memory: jax.Array, mask: jax.Array,
                 bias: jax.Array | None = None) -> jax.Array:
        """x [B, Q, E], memory [B, K, E], mask [B, 1, Q|1, K] bool, bias [1, H, Q, K] -> [B, Q, E]."""
        dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype)
        heads = lambda y: y.reshape(*y.shape[:2], self.num_heads, self.d_kv)  # [B, S, H, D]
        inner = self.num_heads * self.d_kv
        q = heads(dense(inner, name="q")(x))
        k = heads(dense(inner, name="k")(memory))
        v = heads(dense(inner, name="v")(memory))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        if bias is not None:
            scores = scores + bias.astype(jnp.float32)
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*x.shape[:2], inner)
        return dense(x.shape[-1], name="o")(out)


class FeedForward(nn.Module):
    """wo(act(x wi)) or, gated, wo(act(x wi_0) * (x wi_1)). [B, S, E] -> [B, S, E]."""

    config: T5Config
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dense = functools.partial(nn.Dense, self.config.d_ff, use_bias=False, dtype=self.dtype)
        hidden = self.config.activation(dense(name="wi_0" if self.config.is_gated else "wi")(x))
        if self.config.is_gated:
            hidden = hidden * dense(name="wi_1")(x)
        return nn.Dense(x.shape[-1], use_bias=False, dtype=self.dtype, name="wo")(hidden)


class Block(nn.Module):
    """One pre-norm layer: self-attention, (decoder) cross-attention, feed-forward."""

    config: T5Config
    is_decoder: bool
    dtype: Any

    @nn.compact
    def __call__(self, x, self_mask, bias, memory=None, memory_mask=None) -> jax.Array:
        """x [B, S, E] -> [B, S, E]; masks and bias as in `Attention`."""
        c = self.config
        norm = functools.partial(RMSNorm, c.layer_norm_epsilon, self.dtype)
        attention = functools.partial(Attention, c.num_heads, c.d_kv, self.dtype)
        h = norm(name="self_attn_norm")(x)
        x = x + attention(name="self_attn")(h, h, self_mask, bias)
        if self.is_decoder:
            x = x + attention(name="cross_attn")(norm(name="cross_attn_norm")(x), memory, memory_mask)
        return x + FeedForward(c, self.dtype, name="mlp")(norm(name="mlp_norm")(x))


class Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, with cross-attention) stack."""

    config: T5Config
    is_decoder: bool
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, memory: jax.Array | None = None,
                 memory_mask: jax.Array | None = None) -> jax.Array:
        """x [B, S, E], mask [B, S] bool; decoder: memory [B, K, E], memory_mask [B, K].
        -> [B, S, E]."""
        c, length = self.config, x.shape[1]
        buckets = relative_position_buckets(length, length, bidirectional=not self.is_decoder,
                                            num_buckets=c.relative_attention_num_buckets,
                                            max_distance=c.relative_attention_max_distance)
        bias = nn.Embed(c.relative_attention_num_buckets, c.num_heads, dtype=self.dtype,
                        name="relative_attention_bias")(buckets)           # [S, S, H]
        bias = jnp.transpose(bias, (2, 0, 1))[None]                        # [1, H, S, S]
        self_mask = mask[:, None, None, :]
        if self.is_decoder:
            self_mask = self_mask & jnp.tril(jnp.ones((length, length), bool))
            memory_mask = memory_mask[:, None, None, :]
        for i in range(c.num_decoder_layers if self.is_decoder else c.num_layers):
            x = Block(c, self.is_decoder, self.dtype, name=f"layers_{i}")(
                x, self_mask, bias, memory, memory_mask)
        return RMSNorm(c.layer_norm_epsilon, self.dtype, name="final_norm")(x)


class T5(nn.Module):
    """Encoder-decoder with a soft prompt in front of the encoder input.

    Parameters (E d_model, I num_heads * d_kv, F d_ff, V vocab_size, N buckets, H num_heads):
      shared/embedding [V, E]; lm_head/kernel [E, V] (untied only)
      {encoder,decoder}/relative_attention_bias/embedding [N, H], final_norm/scale [E]
      {encoder,decoder}/layers_{i}/self_attn_norm/scale [E], self_attn/{q,k,v}/kernel [E, I],
        self_attn/o/kernel [I, E]; decoder layers also cross_attn_norm and cross_attn (alike);
        mlp_norm/scale [E], mlp/{wi_0,wi_1 | wi}/kernel [E, F], mlp/wo/kernel [F, E]
    """

    config: T5Config
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.shared = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype)
        self.encoder = Stack(c, is_decoder=False, dtype=self.dtype)
        self.decoder = Stack(c, is_decoder=True, dtype=self.dtype)
        if not c.tie_word_embeddings:
            self.lm_head = nn.Dense(c.vocab_size, use_bias=False, dtype=jnp.float32)

    def __call__(self, prompts: jax.Array, input_ids: jax.Array, encoder_mask: jax.Array,
                 decoder_ids: jax.Array, decoder_mask: jax.Array) -> jax.Array:
        """prompts [B, P, E], input_ids [B, L], encoder_mask [B, P + L], decoder_ids and
        decoder_mask [B, T] -> logits [B, T, V] float32. The encoder reads [prompts; embedded input]
        with its unmasked positions moved first (see `valid_first`)."""
        embeds = jnp.concatenate([prompts.astype(self.dtype), self.shared(input_ids)], axis=1)
        order = valid_first(encoder_mask)
        embeds = jnp.take_along_axis(embeds, order[..., None], axis=1)
        encoder_mask = jnp.take_along_axis(encoder_mask, order, axis=1)
        memory = self.encoder(embeds, encoder_mask)
        x = self.decoder(self.shared(decoder_ids), decoder_mask, memory, encoder_mask)
        x = x.astype(jnp.float32)
        if self.config.scale_decoder_outputs:
            x = x * self.config.d_model ** -0.5
        if self.config.tie_word_embeddings:
            return x @ self.shared.embedding.astype(jnp.float32).T
        return self.lm_head(x)


def valid_first(mask: jax.Array) -> jax.Array:
    """[B, S] bool -> [B, S] int: the permutation that moves unmasked positions first, in order.

    T5's relative position bias counts index distances. Gathering each row valid-first makes those
    distances the ones between unmasked tokens, as if positions came from the mask: a row padded
    anywhere (e.g. a short prompt padded to the batch's longest) gives the same numbers as alone.
    For the usual layout (prompt, input, right padding) it is the identity.
    """
    return jnp.argsort(~mask, axis=1, stable=True)


def _shift_right(x: jax.Array, first) -> jax.Array:
    """[B, T] -> [B, T]: `first`, then x[:, :-1]."""
    return jnp.concatenate([jnp.full_like(x[:, :1], first), x[:, :-1]], axis=1)


@dataclasses.dataclass(frozen=True)
class T5Ops:
    """`FamilyOps` for T5 (see base.py). Hashable, so it can be a static jit argument."""

    config: T5Config
    dtype: str = "float32"  # of the frozen weights; logits are always float32
    family: str = dataclasses.field(default="t5", init=False)

    @property
    def module(self) -> T5:
        return T5(self.config, dtype=jnp.dtype(self.dtype))

    def format_input(self, ids: Sequence[int]) -> list[int]:
        return [*ids, self.config.eos_token_id]

    def format_target(self, ids: Sequence[int]) -> list[int]:
        return [*ids, self.config.eos_token_id]

    def training_params(self, params: Params) -> Params:
        """Unchanged: T5 takes no derived arrays."""
        return params

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        """[...] int -> [..., E], in the weight dtype (T5 does not scale its embeddings)."""
        return jnp.take(params["shared"]["embedding"], ids, axis=0)

    def target_logits(self, params: Params, *, prompts, prompt_mask, input_ids, input_mask,
                      target_ids, target_mask, prompt_index=None) -> jax.Array:
        """Teacher-forced logits [B, T, V] float32 (shapes in base.py). Encoder: [prompt; input] with
        mask [prompt_mask; input_mask]; decoder: the unmasked targets, shifted right behind the start
        token (pad); the logits are put back at the targets' own positions. The encoder is
        bidirectional, so rows share no work: a prompt table is gathered per row."""
        if prompt_index is not None:
            prompts, prompt_mask = prompts[prompt_index], prompt_mask[prompt_index]
        encoder_mask = jnp.concatenate([prompt_mask, input_mask], axis=1).astype(bool)
        order = valid_first(target_mask.astype(bool))
        target_mask = jnp.take_along_axis(target_mask.astype(bool), order, axis=1)
        decoder_ids = _shift_right(jnp.take_along_axis(target_ids, order, axis=1),
                                   self.config.decoder_start_token_id)
        logits = self.module.apply({"params": params}, prompts, input_ids, encoder_mask, decoder_ids,
                                   _shift_right(target_mask, True))
        return jnp.take_along_axis(logits, jnp.argsort(order, axis=1)[..., None], axis=1)
