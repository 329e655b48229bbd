"""Log-likelihoods of target tokens under the frozen model with soft prompts — the one
computation that training (loss), rank classification and ensembles share.

`ops` (a family's FamilyOps) is a static argument; `params` are the frozen weights, passed as a
plain argument and never differentiated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .batching import Batch
from .multi_prompt import PromptTable, gather_prompts


def token_log_probs(ops, params, prompts: jax.Array, prompt_mask: jax.Array, batch: Batch) -> jax.Array:
    """log p(target_ids[:, t] | prompt, input, target[:, :t]): [B, T] float32, 0 on padding.

    prompts [B, P, E], prompt_mask [B, P] (one prompt per row).
    """
    logits = ops.target_logits(params, prompts=prompts, prompt_mask=prompt_mask,
                               input_ids=batch.input_ids, input_mask=batch.input_mask,
                               target_ids=batch.target_ids, target_mask=batch.target_mask)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, batch.target_ids[..., None], axis=-1)[..., 0]
    return jnp.where(batch.target_mask, picked, 0.0)


@functools.partial(jax.jit, static_argnames="ops")
def sequence_log_likelihood(ops, params, table: PromptTable, batch: Batch) -> jax.Array:
    """Summed target log-likelihood of each row, row i under prompt table[prompt_index[i]]: [B]."""
    prompts, prompt_mask = gather_prompts(table, batch.prompt_index)
    return token_log_probs(ops, params, prompts, prompt_mask, batch).sum(axis=-1)


def prompt_loss(prompt: jax.Array, ops, params, batch: Batch) -> jax.Array:
    """Mean negative log-likelihood per target token, one prompt [P, E] for every row: scalar.

    Differentiate with respect to `prompt` only (argument 0).
    """
    rows = batch.input_ids.shape[0]
    prompts = jnp.broadcast_to(prompt, (rows, *prompt.shape))
    prompt_mask = jnp.ones(prompts.shape[:2], bool)
    log_probs = token_log_probs(ops, params, prompts, prompt_mask, batch)
    return -log_probs.sum() / jnp.maximum(batch.target_mask.sum(), 1)


@functools.partial(jax.jit, static_argnames="ops")
def greedy_step_logits(ops, params, table: PromptTable, batch: Batch) -> jax.Array:
    """Teacher-forced logits [B, T, V] for greedy decoding (row i under table[prompt_index[i]])."""
    prompts, prompt_mask = gather_prompts(table, batch.prompt_index)
    return ops.target_logits(params, prompts=prompts, prompt_mask=prompt_mask,
                             input_ids=batch.input_ids, input_mask=batch.input_mask,
                             target_ids=batch.target_ids, target_mask=batch.target_mask)


@functools.partial(jax.jit, static_argnames="ops")
def first_target_log_probs(ops, params, table: PromptTable, batch: Batch, label_ids: jax.Array) -> jax.Array:
    """log p(first target token = label_ids[i, c]) for each row i: [B, C]. Only the first target
    position is computed, so one row scores every single-token label at once."""
    prompts, prompt_mask = gather_prompts(table, batch.prompt_index)
    logits = ops.target_logits(params, prompts=prompts, prompt_mask=prompt_mask,
                               input_ids=batch.input_ids, input_mask=batch.input_mask,
                               target_ids=batch.target_ids[:, :1], target_mask=batch.target_mask[:, :1])
    log_probs = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, label_ids, axis=-1)
