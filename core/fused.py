"""Fused prompt-gradient steps: the batches of K trials through the frozen model together, one
model copy, each trial getting exactly its own loss and gradient (issue 16; the step server that
gathers live Tune trials is `search/step_server.py`).

Prompt tuning trains only the input, so K trials of one model are a batch of sum_k B_k rows with
a prompt table of K prompts and `prompt_index` — the machinery ensembles already use. The fused
loss is the sum of the trials' own mean token losses,

    L(p_1..p_K) = sum_k  -(1 / N_k) sum_{rows r of trial k} sum_t log p(y_rt | p_k, x_r, y_r<t),

N_k = trial k's target tokens. Prompt k reaches only trial k's rows, so dL/dp_k is exactly trial
k's own gradient, and each trial keeps its own optimiser, learning rate and data order.
Prompts of different lengths are left-padded in the table (masked), as everywhere else.

Padding: the rows of all trials are sorted by length and cut into calls of `rows_per_call` rows
(each padded to its own bucket), and L is linear in the rows, so the calls' losses and gradients
simply add up. One call of every row is what an accelerator wants (few, large kernels); calls of
a trial's batch size are what a compute-bound CPU wants: no row then pads further than it would in
its own trial's batch, usually less (its neighbours have similar lengths).
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
from .sharding import shard_rows


class TrialGradient(NamedTuple):
    loss: float            # the trial's own mean token loss
    grad: np.ndarray       # [P_k, E] d loss / d prompt_k


def fused_calls(pairs: Sequence[Sequence[EncodedPair]], *, pad_id: int,
                rows_per_call: int | None = None) -> list[Batch]:
    """Trial k's encoded pairs become rows with prompt_index k, sorted by length and cut into
    batches of `rows_per_call` rows (the last one filled with empty rows, so every call has the
    same batch size); None: one batch of all sum_k B_k rows."""
    rows = sorted(((pair, k) for k, trial in enumerate(pairs) for pair in trial),
                  key=lambda row: (len(row[0].input_ids), len(row[0].target_ids)))
    size = rows_per_call or len(rows)
    return [make_batch([pair for pair, _ in chunk], pad_id=pad_id, prompt_index=[k for _, k in chunk], rows=size)
            for chunk in (rows[start: start + size] for start in range(0, len(rows), size))]


@functools.partial(jax.jit, static_argnames="ops")
def _call_value_and_grad(ops, params, embeddings: jax.Array, mask: jax.Array, batch: Batch, tokens: jax.Array):
    """One call's share of every trial's loss [K] and its gradient [K, P, E]; `tokens` [K] are
    the trials' target tokens over ALL calls (the mean's denominator)."""
    def total(table_embeddings):
        log_probs = token_log_probs(ops, params, PromptTable(table_embeddings, mask), batch)        # [R, T]
        summed = jax.ops.segment_sum(log_probs.sum(axis=-1), batch.prompt_index, num_segments=tokens.shape[0])
        losses = -summed / jnp.maximum(tokens, 1)                                                   # [K]
        return losses.sum(), losses

    (_, losses), grads = jax.value_and_grad(total, has_aux=True)(embeddings)
    return losses, grads


def fused_value_and_grad(ops, params, prompts: Sequence[np.ndarray | jax.Array],
                         pairs: Sequence[Sequence[EncodedPair]], *, pad_id: int,
                         rows_per_call: int | None = None, table_size: int | None = None) -> list[TrialGradient]:
    """Each trial's loss and prompt gradient from fused calls: trial k is prompt `prompts[k]`
    [P_k, E] with its batch `pairs[k]`. Equal, to float tolerance, to `jax.value_and_grad(prompt_loss)`
    run on each trial alone.

    rows_per_call: rows per forward/backward (None: all rows in one).
    table_size: pad the prompt table to this many prompts (a step server with a varying number of
    live trials then compiles one table shape, not one per group size)."""
    if len(prompts) != len(pairs) or not prompts:
        raise ValueError(f"one batch per prompt: {len(prompts)} prompts, {len(pairs)} batches")
    width = int(np.shape(prompts[0])[-1])
    fillers = [np.zeros((1, width), np.float32)] * max(0, (table_size or 0) - len(prompts))
    table = stack_prompts(list(prompts) + fillers)
    tokens = np.zeros(len(prompts) + len(fillers), np.float32)
    tokens[: len(prompts)] = [sum(len(pair.target_ids) for pair in trial) for trial in pairs]
    losses, grads = 0.0, 0.0
    for batch in fused_calls(pairs, pad_id=pad_id, rows_per_call=rows_per_call):
        batch = shard_rows(params, batch)
        call_losses, call_grads = _call_value_and_grad(ops, params, table.embeddings, table.mask, batch, tokens)
        losses, grads = losses + call_losses, grads + call_grads
    losses, grads = np.asarray(losses), np.asarray(grads)
    longest = table.embeddings.shape[1]
    return [TrialGradient(float(losses[k]), grads[k, longest - int(np.shape(p)[0]):])
            for k, p in enumerate(prompts)]


def fused_evaluate(model, prompts: Sequence[np.ndarray], task,
                   evaluations: Sequence[tuple[Sequence, Sequence[list[int]]]]) -> list[dict[str, float]]:
    """Each prompt's task metrics on its own examples — `evaluations[k]` = (examples, their encoded
    inputs) for `prompts[k]` — predicted in one pass over a table of the prompts (the queries of
    all of them batched together, as an ensemble's are). Equal to `evaluate_prompt` per prompt."""
    from .evaluation import predict_queries
    from .inference import Query

    if len(prompts) != len(evaluations) or not prompts:
        raise ValueError(f"one evaluation per prompt: {len(prompts)} prompts, {len(evaluations)} evaluations")
    queries = [Query(ids, k) for k, (_, encoded) in enumerate(evaluations) for ids in encoded]
    predictions = predict_queries(model, stack_prompts(prompts), task, queries)
    metrics, start = [], 0
    for examples, encoded in evaluations:
        metrics.append(task.score(examples, predictions[start: start + len(encoded)]))
        start += len(encoded)
    return metrics
