"""The shared decoder-only model in Flax linen: Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 are
one module with the switches of `DecoderConfig` (decoder_config.py). `DecoderOps` (decoder_ops.py)
is its `FamilyOps` for prompt tuning.

Written by hand because no maintained JAX model library fits this project's pins (docs/architecture.md).
Every detail follows transformers' `*ForCausalLM`; tests/core/test_decoder_golden.py proves the logits
equal for every family.

Shapes: B batch, S sequence, T target tokens, E d_model, N query heads, K key/value heads,
G = N // K query heads per key/value head, H head_dim, F ffn_dim, V vocabulary.

Parameter tree (the names of the Gemma 3-only code; leaves marked * exist only where a switch asks):

    embedding                                         [V, E]  tied: also the output projection
    lm_head *                                         [V, E]  untied output projection (HF layout)
    unembedding (optional)                            [E, V]  the output projection transposed, for
                                                              training (`DecoderOps.training_params`)
    blocks_{i}/pre_attention_norm/scale               [E]
    blocks_{i}/attn/q [E, N, H]  k [E, K, H]  v [E, K, H]  out [N, H, E]
    blocks_{i}/attn/q_bias * [N, H]  k_bias * [K, H]  v_bias * [K, H]       (Qwen2)
    blocks_{i}/attn/query_norm/scale *, key_norm/scale * [H]               (Gemma 3, Qwen3)
    blocks_{i}/post_attention_norm/scale *            [E]                   (Gemma 2/3)
    blocks_{i}/pre_ffw_norm/scale                     [E]
    blocks_{i}/mlp/gate [E, F]  up [E, F]  down [F, E]
    blocks_{i}/post_ffw_norm/scale *                  [E]                   (Gemma 2/3)
    final_norm/scale                                  [E]

Norm scales are stored as Hugging Face stores them: w, applied as (1 + w) where `norm_plus_one`
(Gemma) and as w otherwise. The weights are float32 or bfloat16. Activations are float32 either way;
a matmul with bfloat16 weights multiplies in bfloat16 and accumulates in float32 (`dots.einsum`).
Logits are float32.

`DecoderOps.target_logits` runs `Decoder.prefixed`: rows that share a prompt share the forward of
their [<bos>; prompt] prefix (computed once per prompt, not once per row).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .decoder_config import DecoderConfig
from .dots import dense, einsum, tied_logits

Params = Any
_INIT = nn.initializers.normal(stddev=0.02)  # only for random test models; real weights are loaded
_MASKED = float(jnp.finfo(jnp.float32).min)  # finite, so fully masked (padding) rows stay NaN-free
_ACTIVATIONS = {"gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True), "silu": jax.nn.silu}


class RMSNorm(nn.Module):
    """x [..., D] -> x / rms(x) * (1 + scale) (`plus_one`) or * scale, computed in float32, returned
    in x's dtype."""

    eps: float
    plus_one: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (normed * (self.plus_one + scale.astype(jnp.float32))).astype(x.dtype)


class Rotary(NamedTuple):
    """cos and sin of the rotary angles, each [B, S, 1, 1, H/2]: computed once per forward for
    each kind of layer (local, global) and shared by the layers of that kind."""

    cos: jax.Array
    sin: jax.Array

    @classmethod
    def at(cls, positions: jax.Array, inv_freq: np.ndarray) -> "Rotary":
        """positions [B, S] int, inverse frequencies [H/2] -> the tables for those positions."""
        angles = positions[:, :, None, None, None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
        return cls(jnp.cos(angles), jnp.sin(angles))

    def pick(self, index: jax.Array) -> "Rotary":
        """The tables at the positions `index` [B, Q] picks: [B, Q, 1, 1, H/2]."""
        return Rotary(_pick(self.cos, index), _pick(self.sin, index))


def apply_rope(x: jax.Array, rotary: Rotary) -> jax.Array:
    """Rotary embedding, rotate-half convention. x [B, S, n, H] -> [B, S, n, H].

    The halves are an axis of size 2 and rotate_half is a flip of it, so the backward pass is flips
    and products (slicing the halves apart would make it pads and adds, measurably slower on CPU).
    """
    halves = x.reshape(*x.shape[:-1], 2, x.shape[-1] // 2)                     # [B, S, n, 2, H/2]
    rotated = jnp.flip(halves, axis=-2) * jnp.asarray([[-1.0], [1.0]], x.dtype)  # (-x2, x1)
    return (halves * rotary.cos + rotated * rotary.sin).reshape(x.shape)


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
    return x if cap is None else jnp.tanh(x / cap) * cap


class Attention(nn.Module):
    """Grouped-query self-attention with rotary positions, optional q/k/v biases and q/k norms."""

    config: DecoderConfig
    is_global: bool

    def setup(self):
        c = self.config
        self.q = self.param("q", _INIT, (c.d_model, c.num_heads, c.head_dim))
        self.k = self.param("k", _INIT, (c.d_model, c.num_kv_heads, c.head_dim))
        self.v = self.param("v", _INIT, (c.d_model, c.num_kv_heads, c.head_dim))
        self.out = self.param("out", _INIT, (c.num_heads, c.head_dim, c.d_model))
        if c.qkv_bias:
            self.q_bias = self.param("q_bias", nn.initializers.zeros_init(), (c.num_heads, c.head_dim))
            self.k_bias = self.param("k_bias", nn.initializers.zeros_init(), (c.num_kv_heads, c.head_dim))
            self.v_bias = self.param("v_bias", nn.initializers.zeros_init(), (c.num_kv_heads, c.head_dim))
        if c.qk_norm:
            self.query_norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one)
            self.key_norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one)

    def _project(self, x: jax.Array, name: str) -> jax.Array:
        """x [..., E] -> [..., n, H] through weights `name` (+ its bias, + its norm)."""
        c = self.config
        y = dense(x, getattr(self, name))
        if c.qkv_bias:
            y = y + getattr(self, f"{name}_bias").astype(jnp.float32)
        if c.qk_norm and name != "v":
            y = (self.query_norm if name == "q" else self.key_norm)(y)
        return y

    def _keys_values(self, x: jax.Array, rotary: Rotary) -> tuple[jax.Array, jax.Array]:
        """x [..., E] -> k, v [..., K, H] (k rotated)."""
        return apply_rope(self._project(x, "k"), rotary), self._project(x, "v")

    def _queries(self, x: jax.Array, rotary: Rotary) -> jax.Array:
        """x [..., E] -> q [..., N, H] (rotated)."""
        return apply_rope(self._project(x, "q"), rotary)

    def __call__(self, x: jax.Array, rotary: Rotary, allowed: jax.Array,
                 query_index: jax.Array | None = None) -> jax.Array:
        """x [B, S, E], rotary [B, S, ...], allowed [B, S(query), S(key)] bool -> [B, Q, E]: every
        position queries (Q = S), or only those `query_index` [B, Q] picks (keys are all positions)."""
        k, v = self._keys_values(x, rotary)
        if query_index is not None:
            x, rotary, allowed = _pick(x, query_index), rotary.pick(query_index), _pick(allowed, query_index)
        heads = _attend(self.config, self._queries(x, rotary), k, v, allowed, self.q.dtype)
        return dense(heads, self.out, contract=2)

    def shared(self, x: jax.Array, layout: "PrefixLayout") -> jax.Array:
        """The attention of the shared-prefix forward (see `Decoder.prefixed`): x [M, E], the N
        prefixes' positions then the B rows' -> [M, E]. A prefix's queries see its own keys; a
        row's queries see its prefix's keys and values, gathered, then its own."""
        rotary, allowed_prefix, allowed_rows = layout.for_layer(self.is_global)
        k, v = self._keys_values(x, rotary)
        q = self._queries(x, rotary)
        (q_prefix, q_rows), (k_prefix, k_rows), (v_prefix, v_rows) = map(layout.split, (q, k, v))
        heads_prefix = _attend(self.config, q_prefix, k_prefix, v_prefix, allowed_prefix, self.q.dtype)
        heads_rows = _attend(self.config, q_rows, layout.behind_prefix(k_prefix, k_rows),
                             layout.behind_prefix(v_prefix, v_rows), allowed_rows, self.q.dtype)
        return dense(layout.join(heads_prefix, heads_rows), self.out, contract=2)


def _attend(c: DecoderConfig, q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, dtype) -> jax.Array:
    """q [B, Q, N, H], k, v [B, S, K, H], allowed [B, Q, S] bool -> the heads' outputs [B, Q, N, H].

    Query head n = key/value head (n // G), group member (n % G), as transformers' repeat_kv.
    Scores keep the query's [s, k, g] order: with one key/value head (270M) no head axis is moved.
    The products run in `dtype`, the weights' (bfloat16 halves their layout copies)."""
    batch, queries, _, _ = q.shape
    q = q.reshape(batch, queries, c.num_kv_heads, c.num_heads // c.num_kv_heads, c.head_dim)
    scores = einsum("bskgh,btkh->bskgt", q, k.astype(dtype)) * c.query_pre_attn_scalar ** -0.5
    scores = softcap(scores, c.attn_logit_softcap)
    scores = jnp.where(allowed[:, :, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1)
    out = einsum("bskgt,btkh->bskgh", probs, v.astype(dtype))
    return out.reshape(batch, queries, c.num_heads, c.head_dim)


def _pick(values: jax.Array, index: jax.Array) -> jax.Array:
    """values [B, S, ...], index [B, Q] -> values at those positions [B, Q, ...]."""
    return jnp.take_along_axis(values, index.reshape(*index.shape, *(1,) * (values.ndim - 2)), axis=1)


class FeedForward(nn.Module):
    """Gated: down(act(x @ gate) * (x @ up)), act GELU-tanh (GeGLU) or SiLU (SwiGLU).
    x [B, S, E] -> [B, S, E]."""

    config: DecoderConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        gate = dense(x, self.param("gate", _INIT, (c.d_model, c.ffn_dim)))
        up = dense(x, self.param("up", _INIT, (c.d_model, c.ffn_dim)))
        hidden = _ACTIVATIONS[c.activation](gate) * up
        return dense(hidden, self.param("down", _INIT, (c.ffn_dim, c.d_model)))


class Block(nn.Module):
    """One decoder layer: norms before the attention and the feed-forward, and after them too
    where `post_norms` (Gemma 2/3)."""

    config: DecoderConfig
    is_global: bool

    def setup(self):
        c = self.config
        self.pre_attention_norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one)
        self.attn = Attention(c, self.is_global)
        self.pre_ffw_norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one)
        self.mlp = FeedForward(c)
        if c.post_norms:
            self.post_attention_norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one)
            self.post_ffw_norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one)

    def _post(self, name: str, x: jax.Array) -> jax.Array:
        return getattr(self, name)(x) if self.config.post_norms else x

    def __call__(self, x: jax.Array, rotary: Rotary, allowed: jax.Array,
                 query_index: jax.Array | None = None) -> jax.Array:
        """x [B, S, E] -> [B, S, E], or [B, Q, E] at the positions `query_index` [B, Q] picks
        (all positions still serve as keys and values)."""
        h = self.attn(self.pre_attention_norm(x), rotary, allowed, query_index)
        if query_index is not None:
            x = _pick(x, query_index)
        return self._feed_forward(x + self._post("post_attention_norm", h))

    def shared(self, x: jax.Array, layout: "PrefixLayout") -> jax.Array:
        """The layer in the shared-prefix forward: x [M, E] (prefixes' positions, then rows') -> [M, E]."""
        x = x + self._post("post_attention_norm", self.attn.shared(self.pre_attention_norm(x), layout))
        return self._feed_forward(x)

    def _feed_forward(self, x: jax.Array) -> jax.Array:
        return x + self._post("post_ffw_norm", self.mlp(self.pre_ffw_norm(x)))


def attention_masks(mask: jax.Array, positions: jax.Array, window: int | None) -> tuple[jax.Array, jax.Array]:
    """mask [B, S] bool -> (global, local) [B, S, S] bool: causal, key not padding; local also
    needs query position - key position < window (no window: local = global)."""
    length = mask.shape[1]
    allowed = jnp.tril(jnp.ones((length, length), bool))[None] & mask[:, None, :]
    if window is None:
        return allowed, allowed
    near = (positions[:, :, None] - positions[:, None, :]) < window
    return allowed, allowed & near


def _join_flat(prefix: jax.Array, rows: jax.Array) -> jax.Array:
    """[N, P, ...], [B, S, ...] -> [N*P + B*S, ...]: the shared-prefix forward's position order."""
    return jnp.concatenate([prefix.reshape(-1, *prefix.shape[2:]), rows.reshape(-1, *rows.shape[2:])])


class PrefixLayout(NamedTuple):
    """The shared-prefix forward's positions (`Decoder.prefixed`): its hidden states are one [M, E]
    matrix, the N prefixes' P positions each, then the B rows' S positions each (M = N*P + B*S)."""

    prefixes: int
    prefix_length: int
    rows: int
    row_length: int
    row_prefix: jax.Array  # [B] int: the prefix row b continues
    layers: dict           # is_global -> (Rotary [M, 1, 1, H/2], allowed [N, P, P], allowed [B, S, P+S])

    def for_layer(self, is_global: bool) -> tuple[Rotary, jax.Array, jax.Array]:
        """(rotary tables of the M positions, what a prefix's queries may see, what a row's may see)."""
        return self.layers[is_global]

    def split(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[M, ...] -> ([N, P, ...], [B, S, ...])."""
        cut = self.prefixes * self.prefix_length
        return (x[:cut].reshape(self.prefixes, self.prefix_length, *x.shape[1:]),
                x[cut:].reshape(self.rows, self.row_length, *x.shape[1:]))

    def join(self, prefix: jax.Array, rows: jax.Array) -> jax.Array:
        """[N, P, ...], [B, S, ...] -> [M, ...] (the inverse of `split`)."""
        return _join_flat(prefix, rows)

    def behind_prefix(self, prefix: jax.Array, rows: jax.Array) -> jax.Array:
        """[N, P, ...], [B, S, ...] -> [B, P+S, ...]: each row's whole sequence."""
        return jnp.concatenate([prefix[self.row_prefix], rows], axis=1)


class Decoder(nn.Module):
    """The decoder: token embeddings in, float32 logits out."""

    config: DecoderConfig

    def setup(self):
        c = self.config
        self.embedding = self.param("embedding", _INIT, (c.vocab_size, c.d_model))
        if not c.tied_embedding:
            self.lm_head = self.param("lm_head", _INIT, (c.vocab_size, c.d_model))
        self.blocks = [Block(c, kind == "global") for kind in c.layer_types]
        self.final_norm = RMSNorm(c.rms_norm_eps, c.norm_plus_one)

    def embed(self, ids: jax.Array) -> jax.Array:
        """ids [...] int -> [..., E]; Gemma: scaled by sqrt(E) in the weights' dtype (as transformers)."""
        embedded = jnp.take(self.embedding, ids, axis=0)
        if not self.config.embed_scale:
            return embedded
        return embedded * jnp.asarray(self.config.d_model ** 0.5, self.embedding.dtype)

    def __call__(self, embeds: jax.Array, mask: jax.Array,
                 predict_from: jax.Array | None = None) -> jax.Array:
        """embeds [B, S, E], mask [B, S] -> logits [B, S, V] float32, or [B, T, V] when
        `predict_from` [B, T] picks the positions whose hidden states are projected."""
        layer_inputs = self._layer_inputs(mask.astype(bool))
        x = embeds.astype(jnp.float32)
        for block in self.blocks[:-1]:
            x = block(x, *layer_inputs[block.is_global])
        return self._last_layer_logits(x, layer_inputs, predict_from)

    def prefixed(self, prefix: jax.Array, prefix_mask: jax.Array, row_prefix: jax.Array, embeds: jax.Array,
                 mask: jax.Array, predict_from: jax.Array) -> jax.Array:
        """The forward of rows that begin with shared prefixes: row b is [prefix[row_prefix[b]];
        embeds[b]]. prefix [N, P, E], prefix_mask [N, P], row_prefix [B] int, embeds [B, S, E],
        mask [B, S], predict_from [B, T] (positions in the whole P+S) -> logits [B, T, V] float32,
        equal to `__call__` on the whole rows.

        A causal model's hidden states over a prefix do not depend on what follows it, so every
        layer but the last runs each prefix once (N sequences, not B): in training all rows share
        one [<bos>; prompt], 21 positions, while the shipped SST-2 training sentences average 14
        tokens. The last layer runs on the whole rows, where it computes only the predicting
        positions anyway.
        """
        prefix_mask, mask = prefix_mask.astype(bool), mask.astype(bool)
        (prefixes, prefix_length), (rows, row_length) = prefix_mask.shape, mask.shape
        layer_inputs = self._layer_inputs(jnp.concatenate([prefix_mask[row_prefix], mask], axis=1))
        prefix_inputs = self._layer_inputs(prefix_mask)

        layers = {}
        for is_global, (rotary, allowed) in layer_inputs.items():
            prefix_rotary, prefix_allowed = prefix_inputs[is_global]
            flat_rotary = Rotary(*(_join_flat(prefix_table, row_table[:, prefix_length:])
                                   for prefix_table, row_table in zip(prefix_rotary, rotary)))
            layers[is_global] = (flat_rotary, prefix_allowed, allowed[:, prefix_length:])
        layout = PrefixLayout(prefixes, prefix_length, rows, row_length, row_prefix, layers)
        x = layout.join(prefix.astype(jnp.float32), embeds.astype(jnp.float32))
        for block in self.blocks[:-1]:
            x = block.shared(x, layout)
        return self._last_layer_logits(layout.behind_prefix(*layout.split(x)), layer_inputs, predict_from)

    def _layer_inputs(self, mask: jax.Array) -> dict[bool, tuple[Rotary, jax.Array]]:
        """mask [B, S] bool -> is_global -> (rotary tables, allowed keys [B, S, S]); positions are
        cumsum(mask) - 1."""
        c = self.config
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        global_allowed, local_allowed = attention_masks(mask, positions, c.sliding_window)
        return {True: (Rotary.at(positions, c.inverse_frequencies(True)), global_allowed),
                False: (Rotary.at(positions, c.inverse_frequencies(False)), local_allowed)}

    def _last_layer_logits(self, x: jax.Array, layer_inputs: dict, predict_from: jax.Array | None) -> jax.Array:
        """x [B, S, E] into the last layer -> logits [B, S or T, V]. Only the predicting positions
        need its output: it runs its queries, output projection and feed-forward there alone."""
        last = self.blocks[-1]
        x = last(x, *layer_inputs[last.is_global], predict_from)
        unembedding = (self.get_variable("params", "unembedding")
                       if self.has_variable("params", "unembedding") else None)
        head = self.embedding if self.config.tied_embedding else self.lm_head
        logits = tied_logits(self.final_norm(x), head, unembedding)
        return softcap(logits, self.config.final_logit_softcap)


def random_params(config: DecoderConfig, *, seed: int = 0, stddev: float = 0.02) -> Params:
    """Random float32 weights shaped like `Decoder(config).init` (drawn in numpy: no XLA compile of
    the initialisers, which takes seconds), for tests and examples."""
    embeds = jax.ShapeDtypeStruct((1, 1, config.d_model), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 1), bool)
    shapes = jax.eval_shape(Decoder(config).init, jax.random.key(0), embeds, mask)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(rng.normal(0.0, stddev, leaf.shape), jnp.float32),
                                  shapes["params"])
