"""Scoring an ensemble in the paper's Table 3 layout: each member, their average, the best
member, and the voted ensemble — all from ONE batched pass over N x B rows."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from softprompt.core.evaluation import encode_inputs
from softprompt.core.models.base import FrozenModel

from .loaded import LoadedEnsemble, scoring_model
from .predict import ensemble_predict


class Table3(NamedTuple):
    metric: str
    members: list[tuple[str, float]]   # (run id, metric) per member, in member order
    average: float
    best: float
    ensemble: float
    examples: int

    def as_dict(self) -> dict:
        return {"metric": self.metric, "examples": self.examples, "average": self.average, "best": self.best,
                "ensemble": self.ensemble, "members": [{"run_id": r, self.metric: v} for r, v in self.members]}


def _value(task, metrics: dict[str, float], metric: str) -> float:
    return float(task.primary_score(metrics)) if metric == "score" else float(metrics[metric])


def evaluate_ensemble(model: FrozenModel, ensemble: LoadedEnsemble, task, examples: Sequence) -> Table3:
    """The Table 3 row set for `ensemble` on `examples` (its own vote rule)."""
    if not examples:
        raise ValueError(f"no {task.name} examples to evaluate the ensemble on")
    model = scoring_model(model, ensemble.manifest)
    votes = ensemble_predict(model, ensemble.table, task, encode_inputs(model, task, examples),
                             rule=ensemble.manifest.vote_rule)
    metric = ensemble.manifest.metric
    member_values = []
    for number, member in enumerate(ensemble.manifest.members):
        predictions = [vote.members[number] for vote in votes]
        member_values.append((member.run_id, _value(task, task.score(examples, predictions), metric)))
    voted = _value(task, task.score(examples, [vote.label for vote in votes]), metric)
    values = [v for _, v in member_values]
    return Table3(metric, member_values, float(np.mean(values)), float(max(values)), voted, len(examples))
