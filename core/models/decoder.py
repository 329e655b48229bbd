"""Gemma 3 (decoder-only) in Flax linen, and its `FamilyOps` for prompt tuning.

Written by hand because the PyPI `gemma` library cannot be used here (3.3.0 breaks against current
kauldron and pulls TensorFlow; 4.x needs Python 3.12 — see docs/architecture.md). Every detail follows
transformers' `Gemma3ForCausalLM`; tests/core/test_gemma3.py proves the logits equal.

Shapes: B batch, S sequence, T target tokens, E d_model, N query heads, K key/value heads,
G = N // K query heads per key/value head, H head_dim, F ffn_dim, V vocabulary.

Parameter tree (norm scales are stored as w and applied as (1 + w), the Hugging Face convention):

    embedding                                         [V, E]  tied: also the output projection
    unembedding (optional)                            [E, V]  the embedding transposed, for training
                                                              (`Gemma3Ops.training_params`)
    blocks_{i}/pre_attention_norm/scale               [E]
    blocks_{i}/attn/q [E, N, H]  k [E, K, H]  v [E, K, H]  out [N, H, E]
    blocks_{i}/attn/query_norm/scale, key_norm/scale  [H]
    blocks_{i}/post_attention_norm/scale              [E]
    blocks_{i}/pre_ffw_norm/scale                     [E]
    blocks_{i}/mlp/gate [E, F]  up [E, F]  down [F, E]
    blocks_{i}/post_ffw_norm/scale                    [E]
    final_norm/scale                                  [E]

The weights are float32 or bfloat16. Activations are float32 either way; a matmul with bfloat16
weights multiplies in bfloat16 and accumulates in float32 (`dots.einsum`). Logits are float32.

`Gemma3Ops.target_logits` runs `Gemma3.prefixed`: rows that share a prompt share the forward of
their [<bos>; prompt] prefix (computed once per prompt, not once per row).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .dots import dense, einsum, tied_logits

Params = Any
_INIT = nn.initializers.normal(stddev=0.02)  # only for random test models; real weights are loaded
_MASKED = float(jnp.finfo(jnp.float32).min)  # finite, so fully masked (padding) rows stay NaN-free


@dataclasses.dataclass(frozen=True)
class Gemma3Config:
    """Gemma 3 text architecture. Defaults are Gemma 3 270M (as read from its GGUF)."""

    vocab_size: int = 262_144
    d_model: int = 640
    num_layers: int = 18
    num_heads: int = 4                 # query heads
    num_kv_heads: int = 1
    head_dim: int = 256
    ffn_dim: int = 2048
    layer_types: tuple[str, ...] = (("local",) * 5 + ("global",)) * 3  # 5 sliding : 1 global
    sliding_window: int = 512          # a local layer's query sees keys at distance < window
    local_rope_base: float = 10_000.0
    global_rope_base: float = 1_000_000.0
    query_pre_attn_scalar: float = 256.0  # attention logits are scaled by its -1/2 power
    rms_norm_eps: float = 1e-6
    final_logit_softcap: float | None = None
    attn_logit_softcap: float | None = None
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0

    def __post_init__(self):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        if len(self.layer_types) != self.num_layers or set(self.layer_types) - {"local", "global"}:
            raise ValueError(f"layer_types must be {self.num_layers} of 'local'/'global': {self.layer_types}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "Gemma3Config":
        """From `to_dict()` output; other keys (family, dtype, ...) are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in config.items() if key in names})

    def to_dict(self) -> dict:
        """Plain JSON data, with `family` so the dict says what it describes."""
        return {"family": "gemma3", **dataclasses.asdict(self), "layer_types": list(self.layer_types)}


class RMSNorm(nn.Module):
    """x [..., D] -> x / rms(x) * (1 + scale), computed in float32, returned in x's dtype."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (normed * (1.0 + scale.astype(jnp.float32))).astype(x.dtype)


class Rotary(NamedTuple):
    """cos and sin of the rotary angles, each [B, S, 1, 1, H/2]: computed once per forward for
    each base (local, global) and shared by the layers of that kind."""

    cos: jax.Array
    sin: jax.Array

    @classmethod
    def at(cls, positions: jax.Array, base: float, head_dim: int) -> "Rotary":
        """positions [B, S] int -> the tables for those positions."""
        inv_freq = 1.0 / base ** (jnp.arange(head_dim // 2, dtype=jnp.float32) * 2 / head_dim)
        angles = positions[:, :, None, None, None].astype(jnp.float32) * inv_freq
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
    """Grouped-query self-attention with q/k norms and rotary positions."""

    config: Gemma3Config
    is_global: bool

    def setup(self):
        c = self.config
        self.q = self.param("q", _INIT, (c.d_model, c.num_heads, c.head_dim))
        self.k = self.param("k", _INIT, (c.d_model, c.num_kv_heads, c.head_dim))
        self.v = self.param("v", _INIT, (c.d_model, c.num_kv_heads, c.head_dim))
        self.out = self.param("out", _INIT, (c.num_heads, c.head_dim, c.d_model))
        self.query_norm = RMSNorm(c.rms_norm_eps)
        self.key_norm = RMSNorm(c.rms_norm_eps)

    def _keys_values(self, x: jax.Array, rotary: Rotary) -> tuple[jax.Array, jax.Array]:
        """x [..., E] -> k, v [..., K, H] (k normed and rotated)."""
        return apply_rope(self.key_norm(dense(x, self.k)), rotary), dense(x, self.v)

    def _queries(self, x: jax.Array, rotary: Rotary) -> jax.Array:
        """x [..., E] -> q [..., N, H] (normed and rotated)."""
        return apply_rope(self.query_norm(dense(x, self.q)), rotary)

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
        """The attention of the shared-prefix forward (see `Gemma3.prefixed`): x [M, E], the N
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


def _attend(c: Gemma3Config, q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, dtype) -> jax.Array:
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
    """GeGLU: down(gelu_tanh(x @ gate) * (x @ up)). x [B, S, E] -> [B, S, E]."""

    config: Gemma3Config

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        gate = dense(x, self.param("gate", _INIT, (c.d_model, c.ffn_dim)))
        up = dense(x, self.param("up", _INIT, (c.d_model, c.ffn_dim)))
        hidden = jax.nn.gelu(gate, approximate=True) * up
        return dense(hidden, self.param("down", _INIT, (c.ffn_dim, c.d_model)))


class Block(nn.Module):
    """One decoder layer: norms before and after both the attention and the feed-forward."""

    config: Gemma3Config
    is_global: bool

    def setup(self):
        eps = self.config.rms_norm_eps
        self.pre_attention_norm = RMSNorm(eps)
        self.attn = Attention(self.config, self.is_global)
        self.post_attention_norm = RMSNorm(eps)
        self.pre_ffw_norm = RMSNorm(eps)
        self.mlp = FeedForward(self.config)
        self.post_ffw_norm = RMSNorm(eps)

    def __call__(self, x: jax.Array, rotary: Rotary, allowed: jax.Array,
                 query_index: jax.Array | None = None) -> jax.Array:
        """x [B, S, E] -> [B, S, E], or [B, Q, E] at the positions `query_index` [B, Q] picks
        (all positions still serve as keys and values)."""
        h = self.attn(self.pre_attention_norm(x), rotary, allowed, query_index)
        if query_index is not None:
            x = _pick(x, query_index)
        return self._feed_forward(x + self.post_attention_norm(h))

    def shared(self, x: jax.Array, layout: "PrefixLayout") -> jax.Array:
        """The layer in the shared-prefix forward: x [M, E] (prefixes' positions, then rows') -> [M, E]."""
        x = x + self.post_attention_norm(self.attn.shared(self.pre_attention_norm(x), layout))
        return self._feed_forward(x)

    def _feed_forward(self, x: jax.Array) -> jax.Array:
        return x + self.post_ffw_norm(self.mlp(self.pre_ffw_norm(x)))


def attention_masks(mask: jax.Array, positions: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
    """mask [B, S] bool -> (global, local) [B, S, S] bool: causal, key not padding; local also
    needs query position - key position < window."""
    length = mask.shape[1]
    allowed = jnp.tril(jnp.ones((length, length), bool))[None] & mask[:, None, :]
    near = (positions[:, :, None] - positions[:, None, :]) < window
    return allowed, allowed & near


def _join_flat(prefix: jax.Array, rows: jax.Array) -> jax.Array:
    """[N, P, ...], [B, S, ...] -> [N*P + B*S, ...]: the shared-prefix forward's position order."""
    return jnp.concatenate([prefix.reshape(-1, *prefix.shape[2:]), rows.reshape(-1, *rows.shape[2:])])


class PrefixLayout(NamedTuple):
    """The shared-prefix forward's positions (`Gemma3.prefixed`): its hidden states are one [M, E]
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


class Gemma3(nn.Module):
    """Gemma 3 decoder: token embeddings in, float32 logits out."""

    config: Gemma3Config

    def setup(self):
        c = self.config
        self.embedding = self.param("embedding", _INIT, (c.vocab_size, c.d_model))
        self.blocks = [Block(c, kind == "global") for kind in c.layer_types]
        self.final_norm = RMSNorm(c.rms_norm_eps)

    def embed(self, ids: jax.Array) -> jax.Array:
        """ids [...] int -> [..., E], scaled by sqrt(E) in the weights' dtype (as transformers)."""
        scale = jnp.asarray(self.config.d_model ** 0.5, self.embedding.dtype)
        return jnp.take(self.embedding, ids, axis=0) * scale

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
        return {True: (Rotary.at(positions, c.global_rope_base, c.head_dim), global_allowed),
                False: (Rotary.at(positions, c.local_rope_base, c.head_dim), local_allowed)}

    def _last_layer_logits(self, x: jax.Array, layer_inputs: dict, predict_from: jax.Array | None) -> jax.Array:
        """x [B, S, E] into the last layer -> logits [B, S or T, V]. Only the predicting positions
        need its output: it runs its queries, output projection and feed-forward there alone."""
        last = self.blocks[-1]
        x = last(x, *layer_inputs[last.is_global], predict_from)
        unembedding = (self.get_variable("params", "unembedding")
                       if self.has_variable("params", "unembedding") else None)
        logits = tied_logits(self.final_norm(x), self.embedding, unembedding)
        return softcap(logits, self.config.final_logit_softcap)


def random_params(config: Gemma3Config, *, seed: int = 0, stddev: float = 0.02) -> Params:
    """Random float32 weights shaped like `Gemma3(config).init` (drawn in numpy: no XLA compile of
    the initialisers, which takes seconds), for tests and examples."""
    embeds = jax.ShapeDtypeStruct((1, 1, config.d_model), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, 1), bool)
    shapes = jax.eval_shape(Gemma3(config).init, jax.random.key(0), embeds, mask)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(rng.normal(0.0, stddev, leaf.shape), jnp.float32),
                                  shapes["params"])


def previous_valid(mask: jax.Array) -> jax.Array:
    """mask [B, S] bool -> [B, S] int32: index of the last valid position strictly before each
    position (-1 if none). The hidden state there is the one that predicts the token at s."""
    index = jnp.where(mask, jnp.arange(mask.shape[1], dtype=jnp.int32), -1)
    last_valid = jax.lax.cummax(index, axis=1)
    return jnp.concatenate([jnp.full_like(last_valid[:, :1], -1), last_valid[:, :-1]], axis=1)


@dataclasses.dataclass(frozen=True)
class Gemma3Ops:
    """`FamilyOps` for Gemma 3: [<bos>; prompt; input; target], causal, positions from the mask.

    >>> ops = Gemma3Ops(Gemma3Config())
    >>> ops.format_target([818, 5279])
    [818, 5279, 1]
    """

    config: Gemma3Config
    family: ClassVar[str] = "gemma3"

    @property
    def module(self) -> Gemma3:
        return Gemma3(self.config)

    def format_input(self, ids: Sequence[int]) -> list[int]:
        """Unchanged: the forward puts <bos> in front of the prompt."""
        return [int(i) for i in ids]

    def format_target(self, ids: Sequence[int]) -> list[int]:
        return [int(i) for i in ids] + [self.config.eos_id]

    def training_params(self, params: Params) -> Params:
        """`params` plus "unembedding", the embedding transposed [E, V] (335 MB more in bfloat16,
        671 MB in float32): it makes the backward pass through the output projection several times
        faster (`dots.tied_logits`)."""
        return {**params, "unembedding": jnp.transpose(params["embedding"])}

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        """ids [...] -> [..., E], already multiplied by sqrt(d_model)."""
        return self.module.apply({"params": params}, ids, method=Gemma3.embed)

    def logits(self, params: Params, ids: jax.Array, mask: jax.Array) -> jax.Array:
        """Plain causal LM: ids [B, S] (with <bos> if wanted), mask [B, S] -> [B, S, V] float32."""
        return self.module.apply({"params": params}, self.embed(params, ids), mask)

    def target_logits(self, params: Params, *, prompts: jax.Array, prompt_mask: jax.Array,
                      input_ids: jax.Array, input_mask: jax.Array, target_ids: jax.Array,
                      target_mask: jax.Array, prompt_index: jax.Array | None = None) -> jax.Array:
        """prompts [B, P, E], input [B, L], target [B, T] -> [B, T, V] float32: logits[:, t] come from
        the last valid position before target t, so padding may sit anywhere a mask says.

        With `prompt_index` [B], prompts [N, P, E] and prompt_mask [N, P] are a table and row b uses
        prompt prompt_index[b]: each [<bos>; prompt] then runs once, not once per row
        (`Gemma3.prefixed`) — unless the table has more prompts than the batch has rows."""
        rows, input_length = input_ids.shape
        if prompt_index is not None and prompts.shape[0] > rows:  # per row is less work then
            prompts, prompt_mask, prompt_index = prompts[prompt_index], prompt_mask[prompt_index], None
        if prompt_index is None:
            prompt_index = jnp.arange(rows)
        count = prompts.shape[0]
        bos = self.embed(params, jnp.full((count, 1), self.config.bos_id, jnp.int32))
        prefix = jnp.concatenate([bos.astype(jnp.float32), prompts.astype(jnp.float32)], axis=1)  # [N, 1+P, E]
        prefix_mask = jnp.concatenate([jnp.ones((count, 1), bool), prompt_mask.astype(bool)], axis=1)
        embeds = self.embed(params, jnp.concatenate([input_ids, target_ids], axis=1).astype(jnp.int32))
        mask = jnp.concatenate([input_mask, target_mask], axis=1).astype(bool)
        first_target = prefix.shape[1] + input_length
        predict_from = previous_valid(jnp.concatenate([prefix_mask[prompt_index], mask], axis=1))[:, first_target:]
        return self.module.apply({"params": params}, prefix, prefix_mask, prompt_index, embeds, mask, predict_from,
                                 method=Gemma3.prefixed)
