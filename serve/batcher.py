"""One forward pass for a whole batch of inputs that may mix tasks and ensembles.

The deployment gathers single inputs from many requests with `@serve.batch` and hands them here.
Each input expands into its ensemble's N rows (input replicated, prompt varied: paper §6,
Figure 2) on the combined table of the state it was admitted under, so

    B inputs  ->  sum_b N_b queries  ->  ONE `classify_scores` call  ->  [N_b, C_b] per input  ->  vote

Free-text tasks decode greedily (one `greedy_decode` per distinct answer budget) and take the
majority vote. Row chunks are sized by `rows_per_pass` so a batch pads little while the set
of compiled shapes stays small.

Failure isolation: if the combined pass raises, every input is retried alone and only the ones
that still fail get the exception (as their result), so one bad input never fails its batch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import NamedTuple, Sequence

import numpy as np

from softprompt.core.inference import Query, classify_scores, greedy_decode
from softprompt.core.models.base import FrozenModel
from softprompt.ensemble.predict import replicated_queries
from softprompt.ensemble.voting import Vote, majority_vote, vote_classification

from .state import ServedEnsemble, ServeState

logger = logging.getLogger(__name__)
EXACT_ROWS = 8         # passes this small run unpadded; larger ones in power-of-two chunks
PADDING_SLACK = 0.125  # a larger chunk may pad up to this share of the rows


class Item(NamedTuple):
    """One input of one request: the state it was admitted under, its ensemble, its token ids."""

    state: ServeState
    ensemble: ServedEnsemble
    input_ids: list[int]


class BatchResult(NamedTuple):
    votes: list[Vote | Exception]   # one per item, in item order
    rows: int                       # rows the model ran (before chunk padding)


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


def _expand(items: Sequence[Item], order: Sequence[int]) -> list[Query]:
    """Item i's input under each of its ensemble's members, items in `order`: [sum N] queries."""
    queries: list[Query] = []
    for i in order:
        ensemble = items[i].ensemble
        queries += replicated_queries([items[i].input_ids], ensemble.members, first_prompt=ensemble.first_prompt)
    return queries


def _by_length(items: Sequence[Item], indices: Sequence[int]) -> list[int]:
    """Indices sorted by input length, so each chunk pads its inputs to a similar length."""
    return sorted(indices, key=lambda i: len(items[i].input_ids))


def _classify(model: FrozenModel, table, items: Sequence[Item], order: list[int], max_rows: int,
              votes: list) -> int:
    """Rank classification of items[order] in one call; fills `votes`; returns rows run."""
    queries = _expand(items, order)
    labels = [items[i].ensemble.targets for i in order for _ in range(items[i].ensemble.members)]
    single_token = all(len(target) == 1 for candidates in labels for target in candidates)
    rows = len(queries) if single_token else sum(len(candidates) for candidates in labels)
    scores = classify_scores(model, table, queries, [[list(t) for t in c] for c in labels],
                             max_rows=rows_per_pass(rows, max_rows))
    start = 0
    for i in order:
        ensemble = items[i].ensemble
        member_scores = np.stack(scores[start: start + ensemble.members])      # [N, C]
        votes[i] = vote_classification(member_scores, ensemble.task.label_words,
                                       rule=ensemble.loaded.manifest.vote_rule)
        start += ensemble.members
    return rows


def _decode(model: FrozenModel, table, items: Sequence[Item], order: list[int], max_rows: int,
            votes: list) -> int:
    """Greedy answers of items[order] (one answer budget) in one call; fills `votes`."""
    queries = _expand(items, order)
    texts, likelihoods = greedy_decode(model, table, queries, max_rows=rows_per_pass(len(queries), max_rows),
                                       max_new_tokens=items[order[0]].ensemble.task.max_target_tokens)
    start = 0
    for i in order:
        members = items[i].ensemble.members
        votes[i] = majority_vote(texts[start: start + members], likelihoods[start: start + members])
        start += members
    return len(queries)


def _predict_state(model: FrozenModel, items: Sequence[Item], *, max_rows: int) -> tuple[list[Vote], int]:
    """Votes of items that share one state (one combined table)."""
    table = items[0].state.table
    votes: list = [None] * len(items)
    classify = [i for i, item in enumerate(items) if item.ensemble.targets is not None]
    budgets: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        if item.ensemble.targets is None:
            budgets[item.ensemble.task.max_target_tokens].append(i)
    rows = _classify(model, table, items, _by_length(items, classify), max_rows, votes) if classify else 0
    for indices in budgets.values():
        rows += _decode(model, table, items, _by_length(items, indices), max_rows, votes)
    return votes, rows


def _isolated(model: FrozenModel, items: Sequence[Item], *, max_rows: int) -> tuple[list, int]:
    """Fallback after a failed pass: each item alone; a failing item keeps its exception."""
    votes: list = []
    rows = 0
    for item in items:
        try:
            (vote,), item_rows = _predict_state(model, [item], max_rows=max_rows)
            votes.append(vote)
            rows += item_rows
        except Exception as error:  # noqa: BLE001 - this input's own failure, returned to its request only
            logger.exception("prediction failed for one input of ensemble %s", item.ensemble.name)
            votes.append(error)
    return votes, rows


def predict_batch(model: FrozenModel, items: Sequence[Item], *, max_rows: int = 64) -> BatchResult:
    """The vote of every item: one pass per state present in the batch (two only while a
    reload swaps states), each input under all of its ensemble's members."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[id(item.state)].append(i)
    votes: list = [None] * len(items)
    rows = 0
    for indices in groups.values():
        group = [items[i] for i in indices]
        try:
            group_votes, group_rows = _predict_state(model, group, max_rows=max_rows)
        except Exception as error:  # noqa: BLE001 - isolate the offending input(s), keep the rest
            if len(group) == 1:
                logger.exception("prediction failed for one input of ensemble %s", group[0].ensemble.name)
                group_votes, group_rows = [error], 0
            else:
                logger.warning("a batch of %d inputs failed; retrying them one by one", len(group), exc_info=True)
                group_votes, group_rows = _isolated(model, group, max_rows=max_rows)
        for i, vote in zip(indices, group_votes):
            votes[i] = vote
        rows += group_rows
    return BatchResult(votes, rows)
