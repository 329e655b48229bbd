"""Prompt design, the paper's baseline (its comparison with GPT-3 few-shot prompts): a hand-written
text template, zero- or few-shot, scored by the same rank classification as tuned prompts.

The template names the task's record fields in braces: `"Review: {sentence}\\nSentiment:"`.
With `shots=K`, K seeded training examples are shown first, each followed by its label word.
The label words are the scored continuations (decoder-only models: after a space, no eos).
"""

from __future__ import annotations

import os
import string
from typing import Any, Mapping, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from .inference import Query, label_log_likelihoods, label_targets
from .models.base import FrozenModel
from .multi_prompt import PromptTable
from .progress import work_progress
from .tasks import TaskDataError

MAX_TEXT_PROMPT_TOKENS = 2_048
SHOT_SEPARATOR = "\n\n"


class DesignedPrompt(NamedTuple):
    """A hand-written prompt: a template naming record fields, shown after `shots` seeded
    training demonstrations."""

    name: str
    template: str
    shots: int = 0
    seed: int = 0


def template_fields(template: str) -> list[str]:
    """The record fields a template names, in order (`{sentence}` -> ["sentence"])."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def render(template: str, record: Mapping[str, Any]) -> str:
    """`template` with the record's fields filled in; a missing field is named."""
    try:
        return template.format_map(record)
    except KeyError as error:
        raise TaskDataError(f"text prompt names field {error.args[0]!r}, which the records do not have "
                            f"(fields: {', '.join(sorted(record))})") from None


def few_shot_prefix(template: str, records: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> str:
    """The K demonstrations, each `render(template, record) + " " + label`, then a separator."""
    shots = [f"{render(template, record)} {label}" for record, label in zip(records, labels)]
    return "".join(shot + SHOT_SEPARATOR for shot in shots)


def _continuations(model: FrozenModel, label_words: Sequence[str]) -> list[list[int]]:
    """Decoder-only: the label after a space, without eos; T5: the label as its decoder target."""
    if model.family == "t5":
        return label_targets(model, label_words)
    return [model.tokenizer.encode(" " + word) for word in label_words]


def _labelled(task, records) -> list[tuple[Mapping[str, Any], str]]:
    """(record, its gold label word) for records that give a classification example."""
    pairs = []
    for record in records:
        examples = task.preprocess(record)
        if examples:
            pairs.append((record, examples[0].targets))
    return pairs


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all sequences share, leaving at least one token of each.

    >>> common_prefix_length([[2, 7, 7, 1, 5], [2, 7, 7, 3], [2, 7, 7, 1]])
    3
    >>> common_prefix_length([[2, 7], [2, 7]])
    1
    """
    if not sequences:
        return 0
    shared = os.path.commonprefix([list(ids) for ids in sequences])     # any sequences, not only paths
    return max(0, min(len(shared), min(len(ids) for ids in sequences) - 1))


def shared_prefix(model: FrozenModel, inputs: Sequence[list[int]]) -> tuple[PromptTable, list[Query]]:
    """The inputs' common leading tokens (the template's opening and, few-shot, every
    demonstration) as one prompt of their input embeddings, the rest of each input as its query.
    The model sees the same token sequences, but a decoder-only model runs the shared part once
    per pass (the shared-prompt forward), not once per input: an 8-shot prompt's ~250 tokens
    stop dominating the cost. Returns (a [1, P, E] table, one query per input)."""
    common = common_prefix_length(inputs)
    embeddings = model.ops.embed(model.params, jnp.asarray([inputs[0][:common]] if inputs else [[]], jnp.int32))
    table = PromptTable(embeddings.astype(jnp.float32), jnp.ones((1, common), bool))
    return table, [Query(list(ids[common:]), 0) for ids in inputs]


def evaluate_text_prompt(model: FrozenModel, task, *, template: str, shots: int = 0, seed: int = 0,
                         split: str = "validation", max_examples: int | None = None,
                         data_dir: str | None = None) -> dict[str, float]:
    """The task's metrics for a designed text prompt (classification tasks only)."""
    return task.score(*text_prompt_answers(model, task, template=template, shots=shots, seed=seed, split=split,
                                           max_examples=max_examples, data_dir=data_dir))


def text_prompt_answers(model: FrozenModel, task, *, template: str, shots: int = 0, seed: int = 0,
                        split: str = "validation", max_examples: int | None = None,
                        data_dir: str | None = None) -> tuple[list, list[str]]:
    """A designed text prompt's answers: (the first `max_examples` labelled records of `split` as
    examples, the label word it predicts for each), rank classification over the label words."""
    if not task.label_words:
        raise ValueError(f"text prompts are scored by rank classification; task {task.name!r} is free text")
    evaluation = _labelled(task, task.source.records(split, data_dir=data_dir))[:max_examples]
    prefix = ""
    if shots:
        pool = _labelled(task, task.source.records("train", data_dir=data_dir))
        chosen = np.random.default_rng(seed).choice(len(pool), size=shots, replace=False)
        prefix = few_shot_prefix(template, [pool[i][0] for i in chosen], [pool[i][1] for i in chosen])
    inputs = [model.ops.format_input(model.tokenizer.encode(prefix + render(template, record)))[-MAX_TEXT_PROMPT_TOKENS:]
              for record, _ in evaluation]
    table, queries = shared_prefix(model, inputs)
    with work_progress(f"designed prompt on {task.name}", total=len(queries)):
        scores = label_log_likelihoods(model, table, queries, _continuations(model, task.label_words), max_rows=16)
    predictions = [task.label_words[i] for i in scores.argmax(axis=1)]
    return [task.preprocess(record)[0] for record, _ in evaluation], predictions
