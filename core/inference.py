"""Predictions with soft prompts: rank classification and greedy decoding, both on the
multi-prompt forward (N prompts x B inputs in one call).

Rank classification (the paper's evaluation for classification tasks): each label is scored
by the summed log-likelihood of its target tokens; the best label wins. No free decoding.
- T5 scores the label followed by eos, as T5 does.
- Decoder-only models score the label's own tokens (eos is not scored), as LM evaluation
  harnesses do. When every label is one token — SST-2's `negative`/`positive` on Gemma 3 — all
  labels are read from ONE row per (input, prompt): the distribution over the first target
  token. Otherwise every (input, label) pair becomes a row behind its input's [prompt; input],
  which decoder-only families run once for all of the input's labels.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .batching import Batch, EncodedPair, bucket_length, make_batch, pad_rows
from .models.base import FrozenModel
from .multi_prompt import PromptTable
from .progress import advance_work
from .scoring import candidate_log_likelihood, first_target_log_probs, greedy_step_logits
from .sharding import shard_rows

DEFAULT_MAX_ROWS = 64  # rows per forward pass; fixed, so the batch dimension compiles once


class Query(NamedTuple):
    """One input under one prompt: `input_ids` family-formatted, `prompt` an index into the table."""

    input_ids: list[int]
    prompt: int


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start: start + size]


def label_targets(model: FrozenModel, label_words: Sequence[str]) -> list[list[int]]:
    """The target ids rank classification scores for each label word (see the module doc)."""
    if model.family == "t5":
        return [model.ops.format_target(model.tokenizer.encode(word)) for word in label_words]
    return [model.tokenizer.encode(word) for word in label_words]


def _single_token_scores(model: FrozenModel, table: PromptTable, queries: Sequence[Query],
                         labels: Sequence[Sequence[int]], max_rows: int) -> list[np.ndarray]:
    """Fast path: one row per query; labels[q] are query q's single-token label ids."""
    rows_per_pass = min(max_rows, len(queries))
    widest = max(len(ids) for ids in labels)
    scores: list[np.ndarray] = []
    for start in range(0, len(queries), rows_per_pass):
        chunk = queries[start: start + rows_per_pass]
        chunk_labels = labels[start: start + rows_per_pass]
        batch = make_batch([EncodedPair(q.input_ids, [ids[0]], False) for q, ids in zip(chunk, chunk_labels)],
                           pad_id=model.tokenizer.pad_id, prompt_index=[q.prompt for q in chunk], rows=rows_per_pass)
        label_ids = np.zeros((rows_per_pass, widest), np.int32)
        for row, ids in enumerate(chunk_labels):
            label_ids[row, : len(ids)] = ids
        batch, label_ids = shard_rows(model.params, (batch, label_ids))
        picked = np.asarray(first_target_log_probs(model.ops, model.params, table, batch, label_ids))
        scores += [picked[row, : len(ids)] for row, ids in enumerate(chunk_labels)]
        advance_work(len(chunk))
    return scores


def classify_scores(model: FrozenModel, table: PromptTable, queries: Sequence[Query],
                    labels: Sequence[Sequence[list[int]]], *, max_rows: int = DEFAULT_MAX_ROWS) -> list[np.ndarray]:
    """Each query's label log-likelihoods: labels[q] lists query q's candidate target ids, so one
    call can mix tasks. Returns one [C_q] array per query."""
    if not queries:
        return []
    if all(len(target) == 1 for candidates in labels for target in candidates):
        return _single_token_scores(model, table, queries, [[t[0] for t in c] for c in labels], max_rows)
    return _candidate_scores(model, table, queries, labels, max_rows)


def _candidate_scores(model: FrozenModel, table: PromptTable, queries: Sequence[Query],
                      labels: Sequence[Sequence[list[int]]], max_rows: int) -> list[np.ndarray]:
    """Multi-token labels: every candidate is a row behind its query's [prompt; input], which runs
    once for all of them (`candidate_log_likelihood`). A pass holds max_rows // C queries (C the most
    candidates of any query) and their candidates, padded to fixed shapes."""
    widest = max(len(candidates) for candidates in labels)
    queries_per_pass = min(len(queries), max(1, max_rows // widest))
    rows_per_pass = queries_per_pass * widest
    scores: list[np.ndarray] = []
    for start in range(0, len(queries), queries_per_pass):
        chunk, chunk_labels = queries[start: start + queries_per_pass], labels[start: start + queries_per_pass]
        query_batch = make_batch([EncodedPair(q.input_ids, [], False) for q in chunk], pad_id=model.tokenizer.pad_id,
                                 prompt_index=[q.prompt for q in chunk], rows=queries_per_pass)
        targets = [target for candidates in chunk_labels for target in candidates]
        owner = [row for row, candidates in enumerate(chunk_labels) for _ in candidates]
        target_ids, target_mask = pad_rows(targets + [[]] * (rows_per_pass - len(targets)),
                                           bucket_length(max(len(t) for t in targets)), model.tokenizer.pad_id)
        no_input = np.zeros((rows_per_pass, 0), np.int32)
        candidate_batch = Batch(no_input, no_input.astype(bool), target_ids, target_mask,
                                np.array(owner + [0] * (rows_per_pass - len(owner)), np.int32))
        query_batch, candidate_batch = shard_rows(model.params, (query_batch, candidate_batch))
        flat = np.asarray(candidate_log_likelihood(model.ops, model.params, table, query_batch, candidate_batch))
        bounds = np.cumsum([0] + [len(candidates) for candidates in chunk_labels])
        scores += [flat[bounds[i]: bounds[i + 1]] for i in range(len(chunk))]
        advance_work(len(chunk))
    return scores


def label_log_likelihoods(model: FrozenModel, table: PromptTable, queries: Sequence[Query],
                          labels: Sequence[list[int]], *, max_rows: int = DEFAULT_MAX_ROWS) -> np.ndarray:
    """Summed log-likelihood of every label's target ids for every query: [Q, C] float32."""
    if not queries:
        return np.zeros((0, len(labels)), np.float32)
    return np.stack(classify_scores(model, table, queries, [labels] * len(queries), max_rows=max_rows))


def rank_classify(model: FrozenModel, table: PromptTable, queries: Sequence[Query],
                  label_words: Sequence[str], *, max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[str], np.ndarray]:
    """The best label word per query, and the [Q, C] log-likelihoods it was chosen from."""
    scores = label_log_likelihoods(model, table, queries, label_targets(model, label_words), max_rows=max_rows)
    return [label_words[i] for i in scores.argmax(axis=1)], scores


def greedy_decode(model: FrozenModel, table: PromptTable, queries: Sequence[Query], *,
                  max_new_tokens: int, max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[str], np.ndarray]:
    """Greedy continuation of each query until eos or `max_new_tokens`: the texts, and each one's
    summed token log-likelihood [Q] (ensembles break vote ties with it).

    A target prefix the family's `format_target` puts before every answer (the sentinel target
    format's `<extra_id_0>`) is fed as given, not decoded, and is not part of the text.

    Each step reruns the fixed-shape forward over the growing target buffer (no KV cache): simple,
    and one compilation per input bucket. Fine for the short answers of WSC, ReCoRD and SQuAD.
    """
    tokenizer, ops = model.tokenizer, model.ops
    forced = target_prefix(ops)
    texts: list[str] = []
    likelihoods: list[float] = []
    rows_per_pass = min(max_rows, len(queries))
    for chunk in _chunks(list(queries), rows_per_pass):
        buffer = forced + [0] * max_new_tokens
        pairs = [EncodedPair(q.input_ids, buffer, False) for q in chunk]
        batch = make_batch(pairs, pad_id=tokenizer.pad_id, prompt_index=[q.prompt for q in chunk],
                           rows=rows_per_pass)
        target_ids = np.array(batch.target_ids)
        done = np.zeros(rows_per_pass, bool)
        total = np.zeros(rows_per_pass)
        for step in range(len(forced), len(buffer)):
            step_batch = shard_rows(model.params, batch._replace(target_ids=jnp.asarray(target_ids)))
            logits = greedy_step_logits(ops, model.params, table, step_batch)
            log_probs = np.asarray(jax.nn.log_softmax(logits[:, step].astype(jnp.float32)))
            next_ids = log_probs.argmax(-1)
            total += np.where(done, 0.0, log_probs.max(-1))
            target_ids[:, step] = np.where(done, tokenizer.pad_id, next_ids)
            done |= next_ids == tokenizer.eos_id
            if done[: len(chunk)].all():
                break
        for row in target_ids[: len(chunk), len(forced): len(buffer)]:
            ids = list(row)
            ids = ids[: ids.index(tokenizer.eos_id)] if tokenizer.eos_id in ids else ids
            texts.append(tokenizer.decode(ids))
        likelihoods += total[: len(chunk)].tolist()
        advance_work(len(chunk))
    return texts, np.asarray(likelihoods, np.float32)


def target_prefix(ops) -> list[int]:
    """The tokens `format_target` puts before every answer: [] for plain targets, [<extra_id_0>]
    for the sentinel format (every family's target ends with one eos, so an empty answer is
    prefix + [eos])."""
    return list(ops.format_target([]))[:-1]
