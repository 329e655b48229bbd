"""Replicate -> score -> vote: THE path from inputs to ensemble answers, used by the Python API,
guarded promotion, the MLflow model and Ray Serve alike; its scoring half (`label_scores`,
`member_answers`) is also what `scores.MemberScores` runs once over a split.

Each input is replicated across its ensemble's N member prompts (paper §6, Figure 2) on one
prompt table, so the frozen model runs over all of them in one call — never N separate passes.
Inputs of one call may belong to different ensembles and tasks (serving batches requests of
several): each names where its members sit in the table, their weights, its label targets
(rank classification) or its answer budget (greedy decoding), and its vote rule.

    B inputs  ->  sum_b N_b queries  ->  ONE classify_scores call  ->  [N_b, C_b] per input  ->  vote

Row chunks are sized by `rows_per_pass` so a pass pads little while the set of compiled shapes
stays small.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple, Sequence

import numpy as np

from softprompt.core.inference import Query, classify_scores, greedy_decode
from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import PromptTable

from .voting import Vote, majority_vote, vote_classification

EXACT_ROWS = 8         # passes this small run unpadded; larger ones in power-of-two chunks
PADDING_SLACK = 0.125  # a larger chunk may pad up to this share of the rows
DEFAULT_MAX_ROWS = 32  # model rows (inputs x members) per forward chunk


class EnsembleInput(NamedTuple):
    """One input for one ensemble whose members are rows [first_prompt, first_prompt + N) of the table."""

    input_ids: list[int]
    first_prompt: int
    weights: tuple[float, ...]                     # [N] member weights (multiplicities, or the learned pool's)
    targets: tuple[tuple[int, ...], ...] | None    # label target ids per label word; None: free text
    label_words: tuple[str, ...] | None
    rule: str = "majority"
    max_new_tokens: int = 8                        # free text: the answer budget
    bias: tuple[float, ...] | None = None          # [C] the learned vote's per-label bias

    @property
    def members(self) -> int:
        return len(self.weights)


def rows_per_pass(rows: int, max_rows: int) -> int:
    """The chunk size for `rows` rows: exact up to EXACT_ROWS; else the largest power of two
    (or `max_rows`) padding at most PADDING_SLACK of the rows, failing that the one padding least.
    Few sizes, so few compiled shapes; little padding, so little wasted compute on a CPU.

    >>> [rows_per_pass(rows, 64) for rows in (5, 25, 40, 130, 160, 320)]
    [5, 32, 8, 16, 32, 64]
    """
    if rows <= EXACT_ROWS or max_rows <= EXACT_ROWS:
        return max(1, min(rows, max_rows))
    sizes = {max_rows} | {1 << k for k in range(3, max_rows.bit_length()) if 1 << k <= max_rows}
    padded = {size: -(-rows // size) * size for size in sizes}
    snug = [size for size, total in padded.items() if total <= rows * (1 + PADDING_SLACK)]
    return max(snug) if snug else min(padded, key=lambda size: (padded[size], -size))


def replicated_queries(inputs: Sequence[EnsembleInput]) -> list[Query]:
    """Each input under each of its members, input-major: [sum N] queries."""
    return [Query(item.input_ids, item.first_prompt + n) for item in inputs for n in range(item.members)]


def _by_length(inputs: Sequence[EnsembleInput], indices: Sequence[int]) -> list[int]:
    """Indices sorted by input length, so each chunk pads its inputs to a similar length."""
    return sorted(indices, key=lambda i: len(inputs[i].input_ids))


def label_scores(model: FrozenModel, table: PromptTable, inputs: Sequence[EnsembleInput], *,
                 max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[np.ndarray], int]:
    """Every member's label log-likelihoods for each (classification) input: one [N, C] array
    per input, in input order, from one call; and the rows the model ran."""
    order = _by_length(inputs, range(len(inputs)))
    ordered = [inputs[i] for i in order]
    labels = [[list(t) for t in item.targets] for item in ordered for _ in range(item.members)]
    single_token = all(len(target) == 1 for candidates in labels for target in candidates)
    rows = len(labels) if single_token else sum(len(candidates) for candidates in labels)
    scores = classify_scores(model, table, replicated_queries(ordered), labels,
                             max_rows=rows_per_pass(rows, max_rows))
    result: list = [None] * len(inputs)
    start = 0
    for i, item in zip(order, ordered):
        result[i] = np.stack(scores[start: start + item.members])
        start += item.members
    return result, rows


def member_answers(model: FrozenModel, table: PromptTable, inputs: Sequence[EnsembleInput], *,
                   max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[tuple[list[str], np.ndarray]], int]:
    """Every member's greedy answer and its log-likelihood for each (free-text) input, one call per
    answer budget: ([N] texts, [N] log-likelihoods) per input; and the rows the model ran."""
    budgets: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(inputs):
        budgets[item.max_new_tokens].append(i)
    result: list = [None] * len(inputs)
    rows = 0
    for budget, indices in budgets.items():
        order = _by_length(inputs, indices)
        queries = replicated_queries([inputs[i] for i in order])
        texts, likelihoods = greedy_decode(model, table, queries, max_new_tokens=budget,
                                           max_rows=rows_per_pass(len(queries), max_rows))
        start = 0
        for i in order:
            members = inputs[i].members
            result[i] = (texts[start: start + members], likelihoods[start: start + members])
            start += members
        rows += len(queries)
    return result, rows


def vote_inputs(model: FrozenModel, table: PromptTable, inputs: Sequence[EnsembleInput], *,
                max_rows: int = DEFAULT_MAX_ROWS) -> tuple[list[Vote], int]:
    """The ensemble answer of every input (in input order), and the rows the model ran."""
    votes: list = [None] * len(inputs)
    classify = [i for i, item in enumerate(inputs) if item.targets is not None]
    decode = [i for i, item in enumerate(inputs) if item.targets is None]
    rows = 0
    if classify:
        scores, rows = label_scores(model, table, [inputs[i] for i in classify], max_rows=max_rows)
        for i, scored in zip(classify, scores):
            item = inputs[i]
            votes[i] = vote_classification(scored, item.label_words, rule=item.rule, weights=item.weights,
                                           bias=item.bias)
    if decode:
        answers, decoded_rows = member_answers(model, table, [inputs[i] for i in decode], max_rows=max_rows)
        rows += decoded_rows
        for i, (texts, likelihoods) in zip(decode, answers):
            if inputs[i].rule != "majority":
                raise ValueError(f"free-text answers support only the majority vote, not {inputs[i].rule!r}")
            votes[i] = majority_vote(texts, likelihoods, weights=inputs[i].weights)
    return votes, rows

