"""Fused prompt-gradient steps: the batches of K trials through the frozen model in ONE
forward/backward (issue 16's core; the step server that gathers live Tune trials builds on it).

Prompt tuning trains only the input, so K trials of one model are a batch of sum_k B_k rows with
a prompt table of K prompts and `prompt_index` — the machinery ensembles already use. The fused
loss is the sum of the trials' own mean token losses,

    L(p_1..p_K) = sum_k  -(1 / N_k) sum_{rows r of trial k} sum_t log p(y_rt | p_k, x_r, y_r<t),

N_k = trial k's target tokens. Prompt k reaches only trial k's rows, so dL/dp_k is exactly trial
k's own gradient, and each trial keeps its own optimiser, learning rate and data order.
Prompts of different lengths are left-padded in the table (masked), as everywhere else.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import Batch, EncodedPair, make_batch
from .multi_prompt import PromptTable, stack_prompts
from .scoring import token_log_probs


class TrialGradient(NamedTuple):
    loss: float            # the trial's own mean token loss
    grad: np.ndarray       # [P_k, E] d loss / d prompt_k


def fuse_batches(pairs: Sequence[Sequence[EncodedPair]], *, pad_id: int) -> Batch:
    """Trial k's encoded pairs become rows with prompt_index k: [sum_k B_k] rows, one padding
    bucket for all (the cost of fusing on a compute-bound CPU: every row pads to the longest)."""
    rows = [pair for trial in pairs for pair in trial]
    index = [k for k, trial in enumerate(pairs) for _ in trial]
    return make_batch(rows, pad_id=pad_id, prompt_index=index)


@functools.partial(jax.jit, static_argnames=("ops", "trials"))
def _fused_value_and_grad(ops, params, embeddings: jax.Array, mask: jax.Array, batch: Batch, trials: int):
    def total(table_embeddings):
        log_probs = token_log_probs(ops, params, PromptTable(table_embeddings, mask), batch)        # [R, T]
        summed = jax.ops.segment_sum(log_probs.sum(axis=-1), batch.prompt_index, num_segments=trials)
        tokens = jax.ops.segment_sum(batch.target_mask.sum(axis=-1), batch.prompt_index, num_segments=trials)
        losses = -summed / jnp.maximum(tokens, 1)                                                   # [K]
        return losses.sum(), losses

    (_, losses), grads = jax.value_and_grad(total, has_aux=True)(embeddings)
    return losses, grads


def fused_value_and_grad(ops, params, prompts: Sequence[np.ndarray | jax.Array],
                         pairs: Sequence[Sequence[EncodedPair]], *, pad_id: int) -> list[TrialGradient]:
    """Each trial's loss and prompt gradient from one fused forward/backward: trial k is prompt
    `prompts[k]` [P_k, E] with its batch `pairs[k]`. Equal, to float tolerance, to
    `jax.value_and_grad(prompt_loss)` run on each trial alone."""
    if len(prompts) != len(pairs) or not prompts:
        raise ValueError(f"one batch per prompt: {len(prompts)} prompts, {len(pairs)} batches")
    table = stack_prompts(prompts)
    losses, grads = _fused_value_and_grad(ops, params, table.embeddings, table.mask,
                                          fuse_batches(pairs, pad_id=pad_id), len(prompts))
    longest = table.embeddings.shape[1]
    return [TrialGradient(float(losses[k]), np.asarray(grads[k, longest - int(np.shape(p)[0]):]))
            for k, p in enumerate(prompts)]
