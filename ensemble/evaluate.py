"""Scoring ensembles in the paper's Table 3 layout: each prompt, their average, the best one, and
each voted ensemble over them (e.g. the top-N by validation score and the greedy selection) —
all from ONE batched pass over the K distinct prompts x B inputs, plus how often the members
disagree (near-copies vote like one prompt)."""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np

from softprompt.core.evaluation import encode_inputs
from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import stack_prompts
from softprompt.core.progress import work_progress
from softprompt.core.tasks import TaskSpec

from .predict import EnsembleInput, member_answers, stacked_label_scores
from .selection import pairwise_disagreement
from .voting import combine, majority_vote


class Table3(NamedTuple):
    metric: str
    examples: int
    members: list[tuple[str, float]]          # (run id, metric) of each prompt, in prompt order
    average: float                            # over the prompts of the first ensemble
    best: float                               # the best prompt of the first ensemble
    ensemble: float                           # the first ensemble (the one evaluated)
    ensembles: dict[str, float]               # every ensemble by row name, the first first
    weights: dict[str, list[float]]           # each ensemble's votes (or learned weights) per prompt
    disagreement: dict[str, float]            # each ensemble's members' mean pairwise disagreement
    baselines: dict[str, float]               # designed prompts scored on the same examples

    def as_dict(self) -> dict:
        return {"metric": self.metric, "examples": self.examples, "average": self.average, "best": self.best,
                "ensemble": self.ensemble, "ensembles": self.ensembles, "weights": self.weights,
                "disagreement": self.disagreement, "baselines": self.baselines,
                "members": [{"run_id": r, self.metric: v} for r, v in self.members]}


class LearnedRow(NamedTuple):
    """A Table 3 row voted by a learned pool rather than the table's rule."""

    weights: Sequence[float]   # [K] the pool's weight per prompt (0: not a member)
    bias: Sequence[float]      # [C] its per-label bias


def metric_of(task: TaskSpec, metrics: Mapping[str, float], metric: str) -> float:
    return float(task.primary_score(metrics)) if metric == "score" else float(metrics[metric])


def prompt_answers(model: FrozenModel, prompts: Sequence[np.ndarray], task: TaskSpec, encoded: Sequence[list[int]],
                   *, rule: str):
    """Every prompt's answers on every input from one pass, and a `vote(weights)` function giving
    the weighted ensemble's answers ([K] weights over the prompts, or a `LearnedRow`)."""
    table = stack_prompts(list(prompts))
    count = len(prompts)
    if task.free_text:
        inputs = [EnsembleInput(ids, 0, (1,) * count, None, None, "majority", task.max_target_tokens)
                  for ids in encoded]
        decoded, _ = member_answers(model, table, inputs)
        answers = [[texts[k] for texts, _ in decoded] for k in range(count)]
        return answers, lambda w: [majority_vote(texts, likelihoods, weights=w).label for texts, likelihoods in decoded]
    stacked = stacked_label_scores(model, task, table, encoded, rule=rule)            # [K, B, C]
    answers = [[task.label_words[c] for c in row] for row in stacked.argmax(axis=-1)]

    def vote(w):
        if isinstance(w, LearnedRow):
            return [task.label_words[c] for c in combine(stacked, weights=w.weights, rule="learned", bias=w.bias)[0]]
        return [task.label_words[c] for c in combine(stacked, weights=w, rule=rule)[0]]

    return answers, vote


def evaluate_ensembles(model: FrozenModel, task: TaskSpec, examples: Sequence, *, prompts: Sequence[np.ndarray],
                       run_ids: Sequence[str], ensembles: Mapping[str, Sequence[int] | LearnedRow], metric: str,
                       rule: str = "majority", baselines: Mapping[str, float] | None = None) -> Table3:
    """Table 3 for `ensembles` (row name -> [K] votes per prompt under `rule`, or a `LearnedRow`)
    over `prompts` [P_k, E]: the first ensemble is the one evaluated; its members give the average
    and best rows."""
    if not examples:
        raise ValueError(f"no {task.name} examples to evaluate the ensemble on")
    with work_progress(f"{len(prompts)} prompts on {len(examples)} {task.name} examples",
                       total=len(prompts) * len(examples)):
        answers, vote = prompt_answers(model, prompts, task, encode_inputs(model, task, examples), rule=rule)
    values = [metric_of(task, task.score(examples, predicted), metric) for predicted in answers]
    scores, weights, disagreement = {}, {}, {}
    for row, votes in ensembles.items():
        scores[row] = metric_of(task, task.score(examples, vote(votes)), metric)
        weights[row] = ([round(float(w), 3) for w in votes.weights] if isinstance(votes, LearnedRow)
                        else np.asarray(votes).astype(int).tolist())
        disagreement[row] = pairwise_disagreement([answers[k] for k in np.flatnonzero(weights[row])])
    first = np.flatnonzero(next(iter(weights.values())))
    chosen = [values[k] for k in first]
    return Table3(metric, len(examples), list(zip(run_ids, values)), float(np.mean(chosen)), float(max(chosen)),
                  next(iter(scores.values())), scores, weights, disagreement, dict(baselines or {}))
