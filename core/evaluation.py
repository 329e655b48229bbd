"""Predict and score a task's examples with one or many soft prompts."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .batching import encode_pair
from .inference import Query, greedy_decode, rank_classify
from .models.base import FrozenModel
from .multi_prompt import PromptTable, stack_prompts


def encode_inputs(model: FrozenModel, task, examples: Sequence) -> list[list[int]]:
    """Family-formatted input ids of each example, cut to the task's input limit."""
    return [encode_pair(model, ex.inputs, "", max_input_tokens=task.max_input_tokens,
                        max_target_tokens=task.max_target_tokens).input_ids for ex in examples]


def predict(model: FrozenModel, table: PromptTable, task, encoded: Sequence[list[int]], *,
            prompt: int = 0) -> list[str]:
    """One prediction per encoded input under prompt `table[prompt]`: a label word (rank
    classification) for classification tasks, greedy text for free-text tasks."""
    return predict_queries(model, table, task, [Query(ids, prompt) for ids in encoded])


def predict_queries(model: FrozenModel, table: PromptTable, task, queries: Sequence[Query]) -> list[str]:
    """One prediction per query (its input under its own prompt of `table`)."""
    if task.label_words:
        return rank_classify(model, table, queries, task.label_words)[0]
    return greedy_decode(model, table, queries, max_new_tokens=task.max_target_tokens)[0]


def evaluate_prompt(model: FrozenModel, prompt: np.ndarray, task, examples: Sequence, *,
                    encoded: Sequence[list[int]] | None = None) -> dict[str, float]:
    """The task's metrics for one prompt [P, E] on `examples` (`encoded`: their inputs, if known)."""
    encoded = encoded if encoded is not None else encode_inputs(model, task, examples)
    predictions = predict(model, stack_prompts([prompt]), task, encoded)
    return task.score(examples, predictions)
