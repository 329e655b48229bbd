"""Predictions with soft prompts: rank classification and greedy decoding, both on the
multi-prompt forward (N prompts x B inputs in one call).

Rank classification (the paper's evaluation for classification tasks): every (input, label)
pair becomes one row, scored by the summed log-likelihood of the label's tokens; the best label
wins. No free decoding.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from .batching import EncodedPair, make_batch
from .models.base import FrozenModel
from .multi_prompt import PromptTable
from .scoring import greedy_step_logits, sequence_log_likelihood

DEFAULT_MAX_ROWS = 64  # rows per forward pass; fixed, so the batch dimension compiles once


class Query(NamedTuple):
    """One input under one prompt: `input_ids` family-formatted, `prompt` an index into the table."""

    input_ids: list[int]
    prompt: int


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start: start + size]


def label_log_likelihoods(model: FrozenModel, table: PromptTable, queries: Sequence[Query],
                          label_words: Sequence[str], *, max_rows: int = DEFAULT_MAX_ROWS) -> np.ndarray:
    """Log-likelihood of every label word for every query: [Q, C] float32."""
    tokenizer, ops = model.tokenizer, model.ops
    labels = [ops.format_target(tokenizer.encode(word)) for word in label_words]
    rows = [(EncodedPair(q.input_ids, label, False), q.prompt) for q in queries for label in labels]
    rows_per_pass = min(max_rows, len(rows))
    scores = []
    for chunk in _chunks(rows, rows_per_pass):
        batch = make_batch([pair for pair, _ in chunk], pad_id=tokenizer.pad_id,
                           prompt_index=[prompt for _, prompt in chunk], rows=rows_per_pass)
        scores.append(np.asarray(sequence_log_likelihood(ops, model.params, table, batch))[: len(chunk)])
    return np.concatenate(scores).reshape(len(queries), len(labels))


def rank_classify(model: FrozenModel, table: PromptTable, queries: Sequence[Query],
                  label_words: Sequence[str], *, max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[str], np.ndarray]:
    """The best label word per query, and the [Q, C] log-likelihoods it was chosen from."""
    scores = label_log_likelihoods(model, table, queries, label_words, max_rows=max_rows)
    return [label_words[i] for i in scores.argmax(axis=1)], scores


def greedy_decode(model: FrozenModel, table: PromptTable, queries: Sequence[Query], *,
                  max_new_tokens: int, max_rows: int = DEFAULT_MAX_ROWS) -> list[str]:
    """Greedy continuation of each query until eos or `max_new_tokens`, as text.

    Each step reruns the fixed-shape forward over the growing target buffer (no KV cache): simple,
    and one compilation per input bucket. Fine for the short answers of WSC, ReCoRD and SQuAD.
    """
    tokenizer, ops = model.tokenizer, model.ops
    texts: list[str] = []
    rows_per_pass = min(max_rows, len(queries))
    for chunk in _chunks(list(queries), rows_per_pass):
        buffer = [0] * max_new_tokens
        pairs = [EncodedPair(q.input_ids, buffer, False) for q in chunk]
        batch = make_batch(pairs, pad_id=tokenizer.pad_id, prompt_index=[q.prompt for q in chunk],
                           rows=rows_per_pass)
        target_ids = np.array(batch.target_ids)
        done = np.zeros(rows_per_pass, bool)
        for step in range(max_new_tokens):
            logits = greedy_step_logits(ops, model.params, table, batch._replace(target_ids=jnp.asarray(target_ids)))
            next_ids = np.asarray(logits[:, step].argmax(-1))
            target_ids[:, step] = np.where(done, tokenizer.pad_id, next_ids)
            done |= next_ids == tokenizer.eos_id
            if done[: len(chunk)].all():
                break
        for row in target_ids[: len(chunk)]:
            ids = list(row)
            ids = ids[: ids.index(tokenizer.eos_id)] if tokenizer.eos_id in ids else ids
            texts.append(tokenizer.decode(ids))
    return texts
