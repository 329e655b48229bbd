"""Designed text prompts: the demonstrations every input shares run once as a prompt, and the
scores equal those of each full input run on its own."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from softprompt.core.inference import Query, label_log_likelihoods
from softprompt.core.multi_prompt import PromptTable
from softprompt.core.tasks import get_task
from softprompt.core.text_prompts import _continuations, few_shot_prefix, render, shared_prefix

TEMPLATE = "Review: {sentence}\nSentiment (positive or negative):"


def _inputs(model, shots: int, count: int) -> list[list[int]]:
    task = get_task("sst2")
    records = list(task.source.records("validation"))
    prefix = few_shot_prefix(TEMPLATE, records[-shots:], ["positive", "negative"][:shots]) if shots else ""
    return [model.ops.format_input(model.tokenizer.encode(prefix + render(TEMPLATE, r))) for r in records[:count]]


@pytest.mark.parametrize("family", ["t5", "gemma3"])
def test_a_shared_prefix_scores_like_the_full_inputs(family, tiny_model, request):
    model = tiny_model if family == "t5" else request.getfixturevalue("tiny_gemma3")
    inputs = _inputs(model, shots=2, count=6)
    table, queries = shared_prefix(model, inputs)
    prefix = table.embeddings.shape[1]
    assert prefix > 20 and all(inputs[i][prefix:] == q.input_ids for i, q in enumerate(queries))
    labels = _continuations(model, get_task("sst2").label_words)
    shared = label_log_likelihoods(model, table, queries, labels, max_rows=16)
    empty = PromptTable(jnp.zeros((1, 0, model.d_model), jnp.float32), jnp.zeros((1, 0), bool))
    whole = label_log_likelihoods(model, empty, [Query(ids, 0) for ids in inputs], labels, max_rows=16)
    np.testing.assert_allclose(shared, whole, rtol=1e-4, atol=1e-4)
    assert (shared.argmax(axis=1) == whole.argmax(axis=1)).all()
    assert np.ptp(np.asarray(shared[:, 0])) > 0.1              # the inputs do score differently


def test_inputs_with_nothing_in_common_keep_every_token(tiny_model):
    table, queries = shared_prefix(tiny_model, [[5, 6, 1], [7, 1]])
    assert table.embeddings.shape == (1, 0, tiny_model.d_model)
    assert [q.input_ids for q in queries] == [[5, 6, 1], [7, 1]]
