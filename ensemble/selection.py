"""Choosing an ensemble's members among a campaign's candidate prompts.

- `top`: the N candidates with the best validation metric (the paper's Table 3 protocol).
- `greedy`: forward selection with replacement (Caruana, Niculescu-Mizil, Crew & Ksikes 2004, as
  auto-sklearn and AutoGluon build ensembles from search trials), scored on a *selection split*:
  start from the best single candidate; at each step add the candidate (possibly one already in)
  whose vote raises the ensemble's score most; keep the best prefix. Its first prefix is the best
  single candidate, so on the selection split the result never scores below its best member.
  Accuracy on a few hundred examples ties often; were a tie to go to the earlier candidate, the
  best one would be re-added and the ensemble would stay one prompt. A `tiebreak` (a continuous
  score: the ensemble's mean log-probability of the gold label, `MemberScores.gold_log_probability`)
  decides ties, both between additions and between prefixes.

Pure functions over the candidates' answers on the selection split (`scores.MemberScores`); the
model runs elsewhere.

>>> import numpy as np
>>> gold = np.array([0, 1, 1, 0, 1])
>>> p_one = np.array([[.1, .9, .9, .1, .4],       # each candidate's probability of label 1:
...                   [.1, .4, .9, .1, .9],       # 4 of 5 right each, wrong on different examples
...                   [.1, .9, .9, .6, .9]])
>>> vote = lambda weights: (weights @ p_one / weights.sum() > 0.5).astype(int)   # weighted soft vote
>>> accuracy = lambda predicted: float((predicted == gold).mean())
>>> picked = greedy_select(vote, accuracy, candidates=3, size=3)
>>> picked.multiplicities, picked.score, picked.best_member_score
((1, 1, 0), 1.0, 0.8)
"""

from __future__ import annotations

import itertools
from typing import Callable, NamedTuple, Sequence

import numpy as np

SELECT_METHODS = ("greedy", "top")


class Selection(NamedTuple):
    multiplicities: tuple[int, ...]   # [K] votes per candidate (0: not a member)
    score: float                      # the ensemble's score on the selection split
    best_member: int                  # the best single candidate there
    best_member_score: float
    history: tuple[float, ...]        # the ensemble's score after each greedy step
    singles: tuple[float, ...] = ()   # [K] each candidate's own score on the selection split

    @property
    def members(self) -> list[int]:
        """Candidate indices with a vote, in candidate order."""
        return [k for k, count in enumerate(self.multiplicities) if count]


def top_selection(candidates: int, size: int) -> tuple[int, ...]:
    """Multiplicities of the first `size` candidates (candidates come best first)."""
    return tuple(1 if k < size else 0 for k in range(candidates))


def greedy_select(predict: Callable[[np.ndarray], object], score: Callable[[object], float], *,
                  candidates: int, size: int, tiebreak: Callable[[np.ndarray], float] | None = None) -> Selection:
    """Greedy forward selection with replacement.

    Args:
      predict: [K] candidate weights -> the weighted vote's predictions on the selection split.
      score: predictions -> the selection metric (higher is better).
      candidates: K, in preference order (remaining ties go to the earlier candidate).
      size: the most votes the ensemble may hold (its size with multiplicity).
      tiebreak: [K] weights -> a second score (higher is better) deciding equal scores; without
        it an equal prefix never replaces a smaller one.
    """
    if candidates < 1 or size < 1:
        raise ValueError(f"greedy selection needs one or more candidates and size >= 1, got {candidates}, {size}")
    unit = np.eye(candidates, dtype=np.int64)

    def rank(weights: np.ndarray) -> tuple[float, float]:
        return score(predict(weights)), (tiebreak(weights) if tiebreak is not None else 0.0)

    def best_of(ranked: list[tuple[float, float]]) -> int:
        return max(range(len(ranked)), key=lambda k: (ranked[k], -k))     # the first of equals

    singles = [rank(unit[k]) for k in range(candidates)]
    best = best_of(singles)
    weights = unit[best].copy()
    kept, kept_rank, history = weights.copy(), singles[best], [singles[best][0]]
    for _ in range(size - 1):
        trials = [rank(weights + unit[k]) for k in range(candidates)]
        chosen = best_of(trials)
        weights = weights + unit[chosen]
        history.append(trials[chosen][0])
        if trials[chosen] > kept_rank:                    # strictly better: a smaller equal prefix stays
            kept, kept_rank = weights.copy(), trials[chosen]
    return Selection(tuple(int(w) for w in kept), float(kept_rank[0]), best, float(singles[best][0]), tuple(history),
                     tuple(float(single) for single, _ in singles))


def pairwise_disagreement(answers: Sequence[Sequence]) -> float:
    """The share of examples on which two members answer differently, averaged over all pairs
    of members ([N][B] answers); 0 for a single member."""
    pairs = list(itertools.combinations(range(len(answers)), 2))
    if not pairs:
        return 0.0
    return float(np.mean([np.mean([a != b for a, b in zip(answers[i], answers[j])]) for i, j in pairs]))
