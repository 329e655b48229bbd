"""Scoring ensembles in the paper's Table 3 layout: each prompt, their average, the best one, and
each voted ensemble over them (e.g. the top-N by validation score and the greedy selection) —
all from ONE batched pass over the K distinct prompts x B inputs, plus how often the members
disagree (near-copies vote like one prompt) and whether the evaluated ensemble's gap to the best
prompt is more than the examples' noise (an exact McNemar test on the examples one of them gets
right and the other wrong)."""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy.stats import binomtest

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
    paired: dict | None = None                # the first ensemble against the best tuned and the best designed
                                              # prompt, example by example (`paired_rivals`); None: free text

    def as_dict(self) -> dict:
        return {"metric": self.metric, "examples": self.examples, "average": self.average, "best": self.best,
                "ensemble": self.ensemble, "ensembles": self.ensembles, "weights": self.weights,
                "disagreement": self.disagreement, "baselines": self.baselines, "paired": self.paired,
                "members": [{"run_id": r, self.metric: v} for r, v in self.members]}


class Paired(NamedTuple):
    """Two classifiers on the same examples: where exactly one of them is right, and the exact
    McNemar test's two-sided p-value (a binomial test of those discordant examples against 1/2:
    small when one side wins them more often than chance would give)."""

    first_only: int      # examples the first gets right and the second wrong
    second_only: int     # ... and the other way round
    p_value: float


def paired_test(gold: Sequence[str], first: Sequence[str], second: Sequence[str]) -> Paired:
    """`Paired` for two answer lists against the gold answers (all [B]).

    >>> paired_test(list("aaaaaa"), list("aaaaab"), list("abbbba")).first_only
    4
    >>> round(paired_test(list("aaaa"), list("aaab"), list("aaba")).p_value, 3)   # one each: no evidence
    1.0
    """
    if not len(gold) == len(first) == len(second):
        raise ValueError(f"answers for {len(gold)}, {len(first)} and {len(second)} examples")
    right_first = np.asarray(first, object) == np.asarray(gold, object)
    right_second = np.asarray(second, object) == np.asarray(gold, object)
    first_only, second_only = int((right_first & ~right_second).sum()), int((right_second & ~right_first).sum())
    discordant = first_only + second_only
    p_value = binomtest(first_only, discordant, 0.5).pvalue if discordant else 1.0
    return Paired(first_only, second_only, float(p_value))


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


def paired_rivals(gold: Sequence[str], ensemble: tuple[str, Sequence[str]],
                  rivals: Mapping[str, tuple[str, Sequence[str]]]) -> dict:
    """The ensemble (row name, answers) against each rival (kind -> (name, answers)), all [B]:
    `{"ensemble": row, "against": {kind: {"name", "ensemble_only", "rival_only", "p_value"}}}`."""
    against = {}
    for kind, (name, answers) in rivals.items():
        test = paired_test(gold, ensemble[1], answers)
        against[kind] = {"name": name, "ensemble_only": test.first_only, "rival_only": test.second_only,
                         "p_value": test.p_value}
    return {"ensemble": ensemble[0], "against": against}


def evaluate_ensembles(model: FrozenModel, task: TaskSpec, examples: Sequence, *, prompts: Sequence[np.ndarray],
                       run_ids: Sequence[str], ensembles: Mapping[str, Sequence[int] | LearnedRow], metric: str,
                       rule: str = "majority", baselines: Mapping[str, Sequence[str]] | None = None) -> Table3:
    """Table 3 for `ensembles` (row name -> [K] votes per prompt under `rule`, or a `LearnedRow`)
    over `prompts` [P_k, E]: the first ensemble is the one evaluated; its members give the average
    and best rows. `baselines`: designed prompts' answers to the same examples (row name -> [B])."""
    if not examples:
        raise ValueError(f"no {task.name} examples to evaluate the ensemble on")
    with work_progress(f"{len(prompts)} prompts on {len(examples)} {task.name} examples",
                       total=len(prompts) * len(examples)):
        answers, vote = prompt_answers(model, prompts, task, encode_inputs(model, task, examples), rule=rule)
    values = [metric_of(task, task.score(examples, predicted), metric) for predicted in answers]
    scores, weights, disagreement, voted = {}, {}, {}, {}
    for row, votes in ensembles.items():
        voted[row] = vote(votes)
        scores[row] = metric_of(task, task.score(examples, voted[row]), metric)
        weights[row] = ([round(float(w), 3) for w in votes.weights] if isinstance(votes, LearnedRow)
                        else np.asarray(votes).astype(int).tolist())
        disagreement[row] = pairwise_disagreement([answers[k] for k in np.flatnonzero(weights[row])])
    first = np.flatnonzero(next(iter(weights.values())))
    chosen = [values[k] for k in first]
    designed = {name: metric_of(task, task.score(examples, said), metric) for name, said in (baselines or {}).items()}
    paired = None
    if not task.free_text:
        best = int(np.argmax(values))
        rivals = {"best tuned prompt": (run_ids[best], answers[best])}
        if designed:
            name = max(designed, key=designed.get)
            rivals["best designed prompt"] = (name, baselines[name])
        row = next(iter(voted))
        paired = paired_rivals([example.targets.strip() for example in examples], (row, voted[row]), rivals)
    return Table3(metric, len(examples), list(zip(run_ids, values)), float(np.mean(chosen)), float(max(chosen)),
                  next(iter(scores.values())), scores, weights, disagreement, designed, paired)
