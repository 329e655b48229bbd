"""Combining the members of a prompt ensemble (paper §6, Table 3) into one answer, with each
member's weight (its multiplicity: greedy selection with replacement may pick a prompt twice).

Rules (`VOTE_RULES`), for classification:
- `majority` (default): each member votes its best label with its weight; a tie goes to the tied
  label with the highest weighted log-likelihood summed over ALL members, then the first label.
- `soft`: the label with the highest weighted mean of the members' label probabilities (each
  member's log-likelihoods softmaxed over the task's labels).
- `mean_logprob`: the label with the highest weighted mean log-likelihood.
- `learned`: a pool fitted on the selection split (`stacking`): real member weights over the
  members' label log-probabilities, plus a per-label bias.
Free-text tasks take the weighted majority of SQuAD-normalised answers.

A `Vote` carries the answer, the weight behind each answer, each member's own answer, and the
shares: the fraction of the vote behind each answer (majority), or the mean probability of each
label (soft, mean_logprob) — a confidence a client can use.

Pure functions; no model, no MLflow.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Sequence

import numpy as np

from softprompt.core.tasks.metrics import normalize_answer
from softprompt.store.manifest import VOTE_RULES

from .stacking import Pool, label_log_probabilities, pool_logits

__all__ = ["VOTE_RULES", "Vote", "combine", "label_probabilities", "majority_vote", "vote_classification"]


class Vote(NamedTuple):
    label: str                 # the ensemble's answer
    votes: dict[str, int]      # answer -> the weight (members x multiplicity) that gave it
    members: list[str]         # each member's own answer, in member order
    shares: dict[str, float]   # answer -> its share of the vote (majority) or probability (the others)


def _weights(weights: Sequence[float] | None, members: int) -> np.ndarray:
    weights = np.ones(members) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (members,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"need {members} non-negative member weights (not all zero), got {weights.tolist()}")
    return weights


def label_probabilities(scores: np.ndarray) -> np.ndarray:
    """Each member's label probabilities from its label log-likelihoods: softmax over the last axis."""
    return np.exp(label_log_probabilities(scores))


def combine(scores: np.ndarray, *, weights: Sequence[float] | None = None, rule: str = "majority",
            bias: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ensemble's label and the vote shares for many examples at once.

    Args:
      scores: [N, B, C] label log-likelihoods of N members on B examples.
      weights: [N] member weights (default 1 each).
      bias: [C] the learned vote's per-label bias (that rule only).
    Returns:
      ([B] winning label index, [B, C] shares).
    """
    scores = np.asarray(scores, np.float64)
    members, _, labels = scores.shape
    w = _weights(weights, members)
    if rule == "learned":
        if bias is None or len(bias) != labels:
            raise ValueError(f"the learned vote needs a bias per label ({labels}), got {bias!r}")
        probabilities = label_probabilities(pool_logits(scores, Pool(w, np.asarray(bias, np.float64))))
        return probabilities.argmax(axis=-1), probabilities
    if rule == "majority":
        choices = scores.argmax(axis=-1)                                   # [N, B]
        counts = np.einsum("n,nbc->bc", w, np.eye(labels)[choices])        # [B, C] weight per label
        summed = np.einsum("n,nbc->bc", w, scores)                         # tie-break
        tied = counts == counts.max(axis=-1, keepdims=True)
        winner = np.where(tied, summed, -np.inf).argmax(axis=-1)
        return winner, counts / w.sum()
    if rule == "soft":
        mean = np.einsum("n,nbc->bc", w, label_probabilities(scores)) / w.sum()
        return mean.argmax(axis=-1), mean
    if rule == "mean_logprob":
        mean = np.einsum("n,nbc->bc", w, scores) / w.sum()
        return mean.argmax(axis=-1), label_probabilities(mean)
    raise ValueError(f"unknown vote rule {rule!r}; choose one of {VOTE_RULES}")


def vote_classification(scores: np.ndarray, label_words: Sequence[str], *, rule: str = "majority",
                        weights: Sequence[float] | None = None, bias: Sequence[float] | None = None) -> Vote:
    """One example's ensemble answer from its members' label log-likelihoods [N, C]. `votes`
    counts each member's answer with its multiplicity (the learned vote: once per member).

    >>> vote = vote_classification(np.array([[-0.1, -3.0], [-2.0, -1.9], [-2.0, -1.8]]), ["neg", "pos"])
    >>> vote.label, vote.votes, vote.shares["pos"]
    ('pos', {'neg': 1, 'pos': 2}, 0.6666666666666666)
    >>> vote_classification(np.array([[-0.1, -3.0], [-2.0, -1.9], [-2.0, -1.8]]), ["neg", "pos"],
    ...                     rule="learned", weights=[1.0, 0.5, 0.5], bias=[0.0, 0.0]).label   # the sure member
    'neg'
    """
    scores = np.asarray(scores, np.float64)
    winner, shares = combine(scores[:, None, :], weights=weights, rule=rule, bias=bias)
    w = np.ones(scores.shape[0]) if rule == "learned" else _weights(weights, scores.shape[0])
    choices = scores.argmax(axis=1)
    counts = np.bincount(choices, weights=w, minlength=len(label_words))
    votes = {label_words[c]: int(round(counts[c])) for c in range(len(label_words)) if counts[c]}
    return Vote(label_words[int(winner[0])], votes, [label_words[c] for c in choices],
                {word: float(shares[0, c]) for c, word in enumerate(label_words)})


def majority_vote(member_answers: Sequence[str], tie_break: Sequence[float], *,
                  weights: Sequence[int] | None = None) -> Vote:
    """The free-text answer with the most weight behind it; a tie goes to the tied answer with
    the highest `tie_break` total (the weighted summed log-likelihood of the members that gave
    it); then the earliest member. Answers are compared after SQuAD normalisation (case,
    punctuation, articles) and reported in the first member's spelling.

    >>> majority_vote(["positive", "negative", "positive"], [-0.1, -0.2, -0.3]).label
    'positive'
    >>> majority_vote(["a", "b"], [-2.0, -0.5]).label   # 1-1 tie: the likelier side wins
    'b'
    """
    if not member_answers or len(member_answers) != len(tie_break):
        raise ValueError("majority_vote needs one tie-break score per member answer (and at least one)")
    w = _weights(weights, len(member_answers))
    keys = [normalize_answer(answer) for answer in member_answers]
    spelling: dict[str, str] = {}
    for key, answer in zip(keys, member_answers):
        spelling.setdefault(key, answer)
    counts: Counter = Counter()
    likelihood: Counter = Counter()
    for key, weight, score in zip(keys, w, tie_break):
        counts[key] += weight
        likelihood[key] += weight * score
    first_seen = {key: keys.index(key) for key in counts}
    winner = max(counts, key=lambda key: (counts[key], likelihood[key], -first_seen[key]))
    total = float(w.sum())
    return Vote(spelling[winner], {spelling[key]: int(round(count)) for key, count in counts.items()},
                list(member_answers), {spelling[key]: float(count / total) for key, count in counts.items()})
