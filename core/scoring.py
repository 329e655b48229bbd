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
from .multi_prompt import PromptTable


def token_log_probs(ops, params, table: PromptTable, batch: Batch) -> jax.Array:
    """log p(target_ids[:, t] | prompt, input, target[:, :t]): [B, T] float32, 0 on padding; row i
    under prompt table[prompt_index[i]]."""
    logits = _target_logits(ops, params, table, batch)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, batch.target_ids[..., None], axis=-1)[..., 0]
    return jnp.where(batch.target_mask, picked, 0.0)


def _target_logits(ops, params, table: PromptTable, batch: Batch) -> jax.Array:
    """Teacher-forced logits [B, T, V], row i under table[prompt_index[i]] (the table goes to the
    family whole: a decoder-only model runs each prompt once, not once per row)."""
    return ops.target_logits(params, prompts=table.embeddings, prompt_mask=table.mask,
                             prompt_index=batch.prompt_index, input_ids=batch.input_ids,
                             input_mask=batch.input_mask, target_ids=batch.target_ids,
                             target_mask=batch.target_mask)


@functools.partial(jax.jit, static_argnames="ops")
def sequence_log_likelihood(ops, params, table: PromptTable, batch: Batch) -> jax.Array:
    """Summed target log-likelihood of each row, row i under prompt table[prompt_index[i]]: [B]."""
    return token_log_probs(ops, params, table, batch).sum(axis=-1)


@functools.partial(jax.jit, static_argnames="ops")
def candidate_log_likelihood(ops, params, table: PromptTable, queries: Batch, candidates: Batch) -> jax.Array:
    """Summed log-likelihood of each candidate target [R], candidate r continuing query
    candidates.prompt_index[r]: query q is queries.input_ids[q] under prompt
    table[queries.prompt_index[q]] (its targets are not read); candidates have no input ([R, 0]).

    Each query's [prompt; embedded input] goes to the family as one prefix of a table, so a
    decoder-only model runs it once for all of that query's candidates (a multi-token label set's
    C rows share their input's forward)."""
    inputs = ops.embed(params, queries.input_ids).astype(jnp.float32)                # [Q, L, E]
    prefixes = PromptTable(
        jnp.concatenate([table.embeddings[queries.prompt_index], inputs], axis=1),  # [Q, P+L, E]
        jnp.concatenate([table.mask[queries.prompt_index], queries.input_mask.astype(bool)], axis=1))
    return token_log_probs(ops, params, prefixes, candidates).sum(axis=-1)


def prompt_loss(prompt: jax.Array, ops, params, batch: Batch) -> jax.Array:
    """Mean negative log-likelihood per target token, one prompt [P, E] for every row: scalar.

    Differentiate with respect to `prompt` only (argument 0).
    """
    table = PromptTable(prompt[None], jnp.ones((1, prompt.shape[0]), bool))
    one_prompt = batch._replace(prompt_index=jnp.zeros(batch.input_ids.shape[0], jnp.int32))
    log_probs = token_log_probs(ops, params, table, one_prompt)
    return -log_probs.sum() / jnp.maximum(batch.target_mask.sum(), 1)


@functools.partial(jax.jit, static_argnames="ops")
def greedy_step_logits(ops, params, table: PromptTable, batch: Batch) -> jax.Array:
    """Teacher-forced logits [B, T, V] for greedy decoding (row i under table[prompt_index[i]])."""
    return _target_logits(ops, params, table, batch)


@functools.partial(jax.jit, static_argnames="ops")
def first_target_log_probs(ops, params, table: PromptTable, batch: Batch, label_ids: jax.Array) -> jax.Array:
    """log p(first target token = label_ids[i, c]) for each row i: [B, C]. Only the first target
    position is computed, so one row scores every single-token label at once."""
    first = batch._replace(target_ids=batch.target_ids[:, :1], target_mask=batch.target_mask[:, :1])
    logits = _target_logits(ops, params, table, first)
    log_probs = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(log_probs, label_ids, axis=-1)
