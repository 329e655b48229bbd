"""Rank classification and greedy decoding on the multi-prompt forward."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pytest

from softprompt.core.batching import EncodedPair, make_batch
from softprompt.core.inference import Query, classify_scores, greedy_decode
from softprompt.core.multi_prompt import stack_prompts
from softprompt.core.prompts import SoftPrompt
from softprompt.core.scoring import sequence_log_likelihood


# The slow reference: one row per (input, candidate target), each scored alone by its summed log-likelihood.
class ScoredRow(NamedTuple):
    """One row of a scoring pass: an input, a candidate target, and the prompt to use."""

    input_ids: list[int]
    target_ids: list[int]
    prompt: int


def score_rows(model, table, rows: Sequence[ScoredRow], *, max_rows: int = 64) -> np.ndarray:
    """Summed target log-likelihood of every row: [R] float32."""
    rows_per_pass = min(max_rows, len(rows))
    scores = []
    for start in range(0, len(rows), rows_per_pass):
        chunk = rows[start: start + rows_per_pass]
        batch = make_batch([EncodedPair(row.input_ids, row.target_ids, False) for row in chunk],
                           pad_id=model.tokenizer.pad_id, prompt_index=[row.prompt for row in chunk],
                           rows=rows_per_pass)
        scores.append(np.asarray(sequence_log_likelihood(model.ops, model.params, table, batch))[: len(chunk)])
    return np.concatenate(scores)


def _setup(model):
    prompts = stack_prompts([SoftPrompt.init(model, length=n, seed=n).embeddings for n in (3, 5)])
    texts = ("a fine film", "the worst script in years", "moving")
    queries = [Query(model.ops.format_input(model.tokenizer.encode(t)), i % 2) for i, t in enumerate(texts)]
    return prompts, queries


def test_single_token_fast_path_equals_one_row_per_label(tiny_model):
    table, queries = _setup(tiny_model)
    ids = [tiny_model.tokenizer.encode(w)[0] for w in ("positive", "negative", "neutral")]
    labels = [[[ids[0]], [ids[1]]], [[ids[0]], [ids[1]], [ids[2]]], [[ids[2]], [ids[0]]]]  # mixed tasks
    fast = classify_scores(tiny_model, table, queries, labels)
    rows = [ScoredRow(q.input_ids, target, q.prompt) for q, cands in zip(queries, labels) for target in cands]
    slow = score_rows(tiny_model, table, rows)
    np.testing.assert_allclose(np.concatenate(fast), slow, atol=1e-5)
    assert [len(s) for s in fast] == [2, 3, 2]


def test_multi_token_labels_are_summed_over_their_tokens(tiny_model):
    table, queries = _setup(tiny_model)
    target = tiny_model.ops.format_target(tiny_model.tokenizer.encode("not_entailment"))
    assert len(target) > 2
    (scores,) = classify_scores(tiny_model, table, queries[:1], [[target]])
    per_token = [score_rows(tiny_model, table, [ScoredRow(queries[0].input_ids, target[: k + 1], 0)])[0]
                 for k in range(len(target))]
    assert scores[0] == np.float32(per_token[-1]) and np.all(np.diff(per_token) <= 1e-6)  # each token adds log p <= 0


def test_greedy_decode_rows_are_independent(tiny_model):
    table, queries = _setup(tiny_model)
    texts, likelihoods = greedy_decode(tiny_model, table, queries, max_new_tokens=4)
    assert len(texts) == 3 and likelihoods.shape == (3,) and np.all(likelihoods <= 0)
    again, _ = greedy_decode(tiny_model, table, queries[::-1], max_new_tokens=4)
    assert again[::-1] == texts  # each row decodes independently of its batch-mates


def test_greedy_decode_feeds_the_sentinel_and_decodes_after_it(tiny_model):
    """Sentinel targets (§2.2): decoding starts after <extra_id_0>, which is fed, never decoded."""
    from softprompt.core.inference import target_prefix
    from softprompt.core.sentinel import with_sentinel_targets

    table, queries = _setup(tiny_model)
    sentinel_model = with_sentinel_targets(tiny_model)
    sentinel = tiny_model.tokenizer.sentinel_id(0)
    assert target_prefix(tiny_model.ops) == [] and target_prefix(sentinel_model.ops) == [sentinel]
    texts, likelihoods = greedy_decode(sentinel_model, table, queries, max_new_tokens=1)
    vocab = np.arange(tiny_model.config["vocab_size"])
    for query, text, likelihood in zip(queries, texts, likelihoods):
        # the one decoded token is the most likely one after the sentinel, scored as a target
        after_sentinel = score_rows(tiny_model, table, [ScoredRow(query.input_ids, [sentinel, int(t)], query.prompt)
                                                        for t in vocab])
        best = int(after_sentinel.argmax())
        sentinel_alone = score_rows(tiny_model, table, [ScoredRow(query.input_ids, [sentinel], query.prompt)])[0]
        assert abs(likelihood - (after_sentinel[best] - sentinel_alone)) < 1e-4
        assert text == ("" if best == tiny_model.tokenizer.eos_id else tiny_model.tokenizer.decode([best]))


def test_model_for_formats_targets_once_whatever_model_it_is_given(tiny_model):
    """`model_for` is idempotent: asked twice for sentinel targets it prefixes one sentinel; asked
    for plain targets it unwraps; a name loads the same cached model; an unknown format is refused."""
    from softprompt.core.sentinel import model_for

    sentinel = tiny_model.tokenizer.sentinel_id(0)
    twice = model_for(model_for(tiny_model, "sentinel"), "sentinel")
    assert twice.ops.format_target([5])[:2] == [sentinel, 5]
    assert model_for(twice, "plain").ops is tiny_model.ops and model_for(tiny_model) is tiny_model
    assert model_for("t5-tiny-random") is tiny_model
    with pytest.raises(ValueError, match="unknown target format 'span'"):
        model_for(tiny_model, "span")
