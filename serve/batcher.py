"""One forward pass for a whole batch of inputs that may mix tasks and ensembles.

The deployment gathers single inputs from many requests with `@serve.batch` and hands them
here. Each becomes its ensemble's `EnsembleInput` on the combined table of the state it was
admitted under, and the batch runs through `ensemble.predict.vote_inputs` — the same
replicate -> score -> vote path as Table 3 and the MLflow model.

Failure isolation: if the combined pass raises, every input is retried alone and only the ones
that still fail get the exception (as their result), so one bad input never fails its batch.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import NamedTuple, Sequence

from softprompt.core.models.base import FrozenModel
from softprompt.ensemble.predict import DEFAULT_MAX_ROWS, vote_inputs
from softprompt.ensemble.voting import Vote

from .state import ServedEnsemble, ServeState

logger = logging.getLogger(__name__)


class Item(NamedTuple):
    """One input of one request: the state it was admitted under, its ensemble, its token ids."""

    state: ServeState
    ensemble: ServedEnsemble
    input_ids: list[int]


class BatchResult(NamedTuple):
    votes: list[Vote | Exception]   # one per item, in item order
    rows: int                       # rows the model ran (before chunk padding)


def _predict_state(model: FrozenModel, items: Sequence[Item], *, max_rows: int) -> tuple[list[Vote], int]:
    """Votes of items that share one state (one combined table), in one call."""
    inputs = [item.ensemble.make_input(item.input_ids) for item in items]
    return vote_inputs(model, items[0].state.table, inputs, max_rows=max_rows)


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


def predict_batch(model: FrozenModel, items: Sequence[Item], *, max_rows: int = DEFAULT_MAX_ROWS) -> BatchResult:
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
