"""`FamilyOps` of the shared decoder (decoder.py): [<bos>; prompt; input; target], causal,
positions from the mask. The family name is the config's (`llama`, `qwen3`, `gemma3`, ...)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from .decoder import Decoder
from .decoder_config import DecoderConfig

Params = Any


def previous_valid(mask: jax.Array) -> jax.Array:
    """mask [B, S] bool -> [B, S] int32: index of the last valid position strictly before each
    position (-1 if none). The hidden state there is the one that predicts the token at s."""
    index = jnp.where(mask, jnp.arange(mask.shape[1], dtype=jnp.int32), -1)
    last_valid = jax.lax.cummax(index, axis=1)
    return jnp.concatenate([jnp.full_like(last_valid[:, :1], -1), last_valid[:, :-1]], axis=1)


@dataclasses.dataclass(frozen=True)
class DecoderOps:
    """`FamilyOps` for the decoder: [<bos>; prompt; input; target] (no <bos> where the family's
    tokenizer adds none, as Qwen's), causal, positions from the mask.

    >>> ops = DecoderOps(DecoderConfig())
    >>> ops.family, ops.format_target([818, 5279])
    ('gemma3', [818, 5279, 1])
    """

    config: DecoderConfig

    @property
    def family(self) -> str:
        return self.config.family

    @property
    def module(self) -> Decoder:
        return Decoder(self.config)

    def format_input(self, ids: Sequence[int]) -> list[int]:
        """Unchanged: the forward puts <bos> in front of the prompt."""
        return [int(i) for i in ids]

    def format_target(self, ids: Sequence[int]) -> list[int]:
        return [int(i) for i in ids] + [self.config.eos_id]

    def training_params(self, params: Params) -> Params:
        """`params` plus "unembedding", the output projection (embedding or lm_head) transposed
        [E, V] (V * E more weights): it makes the backward pass through the output projection
        several times faster (`dots.tied_logits`)."""
        head = params["embedding"] if self.config.tied_embedding else params["lm_head"]
        return {**params, "unembedding": jnp.transpose(head)}

    def embed(self, params: Params, ids: jax.Array) -> jax.Array:
        """ids [...] -> [..., E] (Gemma: already multiplied by sqrt(d_model))."""
        return self.module.apply({"params": params}, ids, method=Decoder.embed)

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
        (`Decoder.prefixed`) — unless the table has more prompts than the batch has rows."""
        rows, input_length = input_ids.shape
        if prompt_index is not None and prompts.shape[0] > rows:  # per row is less work then
            prompts, prompt_mask, prompt_index = prompts[prompt_index], prompt_mask[prompt_index], None
        if prompt_index is None:
            prompt_index = jnp.arange(rows)
        count = prompts.shape[0]
        prefix, prefix_mask = prompts.astype(jnp.float32), prompt_mask.astype(bool)
        if self.config.add_bos:
            bos = self.embed(params, jnp.full((count, 1), self.config.bos_id, jnp.int32))
            prefix = jnp.concatenate([bos.astype(jnp.float32), prefix], axis=1)  # [N, 1+P, E]
            prefix_mask = jnp.concatenate([jnp.ones((count, 1), bool), prefix_mask], axis=1)
        embeds = self.embed(params, jnp.concatenate([input_ids, target_ids], axis=1).astype(jnp.int32))
        mask = jnp.concatenate([input_mask, target_mask], axis=1).astype(bool)
        first_target = prefix.shape[1] + input_length
        predict_from = previous_valid(jnp.concatenate([prefix_mask[prompt_index], mask], axis=1))[:, first_target:]
        return self.module.apply({"params": params}, prefix, prefix_mask, prompt_index, embeds, mask, predict_from,
                                 method=Decoder.prefixed)
