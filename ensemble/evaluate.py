"""Scoring ensembles in the paper's Table 3 layout: each prompt, their average, the best one, and
each voted ensemble over them (e.g. the top-N by validation score and the greedy selection) —
all arithmetic over ONE `MemberScores` of the K distinct prompts on the B examples, plus how often
the members disagree (near-copies vote like one prompt) and whether the evaluated ensemble's gap
to the best prompt is more than the examples' noise (an exact McNemar test on the examples one of
them gets right and the other wrong)."""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy.stats import binomtest

from .scores import MemberScores
from .selection import pairwise_disagreement


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


def evaluate_ensembles(scores: MemberScores, *, run_ids: Sequence[str],
                       ensembles: Mapping[str, Sequence[int] | LearnedRow], rule: str = "majority",
                       baselines: Mapping[str, Sequence[str]] | None = None) -> Table3:
    """Table 3 for `ensembles` (row name -> [K] votes per prompt under `rule`, or a `LearnedRow`)
    over the K prompts of `scores` (`run_ids`: [K]): the first ensemble is the one evaluated; its
    members give the average and best rows. `baselines`: designed prompts' answers to the same
    examples (row name -> [B])."""
    task, examples = scores.task, scores.examples
    answers = scores.answers()
    values = [scores.value(predicted) for predicted in answers]
    table, weights, disagreement, voted = {}, {}, {}, {}
    for row, votes in ensembles.items():
        voted[row] = (scores.vote(votes.weights, "learned", bias=votes.bias) if isinstance(votes, LearnedRow)
                      else scores.vote(votes, rule))
        table[row] = scores.value(voted[row])
        weights[row] = ([round(float(w), 3) for w in votes.weights] if isinstance(votes, LearnedRow)
                        else np.asarray(votes).astype(int).tolist())
        disagreement[row] = pairwise_disagreement([answers[k] for k in np.flatnonzero(weights[row])])
    first = np.flatnonzero(next(iter(weights.values())))
    chosen = [values[k] for k in first]
    designed = {name: scores.value(said) for name, said in (baselines or {}).items()}
    paired = None
    if not task.free_text:
        best = int(np.argmax(values))
        rivals = {"best tuned prompt": (run_ids[best], answers[best])}
        if designed:
            name = max(designed, key=designed.get)
            rivals["best designed prompt"] = (name, baselines[name])
        row = next(iter(voted))
        paired = paired_rivals([example.targets.strip() for example in examples], (row, voted[row]), rivals)
    return Table3(scores.metric, len(examples), list(zip(run_ids, values)), float(np.mean(chosen)),
                  float(max(chosen)), next(iter(table.values())), table, weights, disagreement, designed, paired)
