"""Combining the members of a prompt ensemble (paper §6, Table 3): majority vote, or the mean
log-likelihood of each label.

Pure functions over one example's member answers; no model, no MLflow.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Sequence

import numpy as np

from softprompt.core.tasks.metrics import normalize_answer

VOTE_RULES = ("majority", "mean_logprob")


class Vote(NamedTuple):
    label: str                # the ensemble's answer
    votes: dict[str, int]     # answer -> how many members gave it
    members: list[str]        # each member's own answer, in member order


def majority_vote(member_answers: Sequence[str], tie_break: Sequence[float]) -> Vote:
    """The answer most members gave; a tie goes to the tied answer with the highest `tie_break`
    total (the summed log-likelihood of the members that gave it); then the earliest member.

    Free-text answers are compared after SQuAD normalisation (case, punctuation, articles),
    and reported as the first member's spelling.

    >>> majority_vote(["positive", "negative", "positive"], [-0.1, -0.2, -0.3]).label
    'positive'
    >>> majority_vote(["a", "b"], [-2.0, -0.5]).label   # 1-1 tie: the likelier side wins
    'b'
    """
    if not member_answers or len(member_answers) != len(tie_break):
        raise ValueError("majority_vote needs one tie-break score per member answer (and at least one)")
    keys = [normalize_answer(answer) for answer in member_answers]
    spelling = {}
    for key, answer in zip(keys, member_answers):
        spelling.setdefault(key, answer)
    counts = Counter(keys)
    likelihood = {key: sum(score for k, score in zip(keys, tie_break) if k == key) for key in counts}
    first_seen = {key: keys.index(key) for key in counts}
    winner = max(counts, key=lambda key: (counts[key], likelihood[key], -first_seen[key]))
    return Vote(spelling[winner], {spelling[key]: count for key, count in counts.items()}, list(member_answers))


def vote_classification(scores: np.ndarray, label_words: Sequence[str], *, rule: str = "majority") -> Vote:
    """One example's ensemble answer from its members' label log-likelihoods [N, C].

    majority: each member votes its best label; ties go to the tied label with the highest
    log-likelihood summed over ALL members. mean_logprob: the label with the highest mean.
    """
    scores = np.asarray(scores, np.float64)
    member_choices = scores.argmax(axis=1)
    members = [label_words[c] for c in member_choices]
    counts = np.bincount(member_choices, minlength=len(label_words))
    if rule == "mean_logprob":
        winner = int(scores.mean(axis=0).argmax())
    elif rule == "majority":
        tied = np.flatnonzero(counts == counts.max())
        winner = int(tied[scores.sum(axis=0)[tied].argmax()])
    else:
        raise ValueError(f"unknown vote rule {rule!r}; choose one of {VOTE_RULES}")
    votes = {label_words[c]: int(counts[c]) for c in range(len(label_words)) if counts[c]}
    return Vote(label_words[winner], votes, members)
