"""Metrics as T5 reports them for GLUE, SuperGLUE and SQuAD, in percent (0-100).

Each metric is a small pure function of target and prediction *values*; `TaskSpec.score` turns
the model's predicted strings into those values first (a label word becomes its class index, an
unknown word becomes `INVALID`, as T5's `string_label_to_class_id` maps it to -1).

>>> accuracy([0, 1, 1, 0], [0, 1, 0, INVALID])
50.0
>>> normalize_answer("The  Cat.")
'cat'
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

INVALID = -1  # the value of a predicted string that is not one of the task's label words


def _sklearn_metrics():
    """`sklearn.metrics`, imported on first use (it takes ~1.5 s, which serving and the
    command line should not pay just to format inputs)."""
    from sklearn import metrics

    return metrics


def label_index(prediction: str, label_words: Sequence[str]) -> int:
    """The class index of a predicted label word, or `INVALID` when it is none of them.

    >>> label_index(" entailment", ("entailment", "not_entailment"))
    0
    >>> label_index("maybe", ("entailment", "not_entailment"))
    -1
    """
    word = prediction.strip()
    return label_words.index(word) if word in label_words else INVALID


def accuracy(targets: Sequence[Hashable], predictions: Sequence[Hashable]) -> float:
    """Percentage of predictions equal to their target (class indices or strings)."""
    return 100.0 * float(_sklearn_metrics().accuracy_score(list(targets), list(predictions)))


def binary_f1(targets: Sequence[int], predictions: Sequence[int]) -> float:
    """F1 of class 1 (T5's `f1_score_with_invalid`): a prediction that is neither 0 nor 1
    counts as wrong, i.e. it is replaced by the opposite of its target."""
    targets = np.asarray(targets, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64).copy()
    invalid = (predictions != 0) & (predictions != 1)
    predictions[invalid] = 1 - targets[invalid]
    return 100.0 * float(_sklearn_metrics().f1_score(targets, predictions, zero_division=0.0))


def macro_f1(targets: Sequence[int], predictions: Sequence[int], *, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over classes `0 .. num_classes - 1` (T5's
    `mean_multiclass_f1`); an invalid prediction is a miss for its true class."""
    return 100.0 * float(
        _sklearn_metrics().f1_score(
            list(targets),
            list(predictions),
            labels=list(range(num_classes)),
            average="macro",
            zero_division=0.0,
        )
    )


def group_exact_match(
    targets: Sequence[Hashable], predictions: Sequence[Hashable], *, groups: Sequence[Hashable]
) -> float:
    """Percentage of groups whose every prediction equals its target (MultiRC's EM: a question
    counts only when all of its answer-options are classified right)."""
    group_correct: dict[Hashable, bool] = {}
    for target, prediction, group in zip(targets, predictions, groups, strict=True):
        group_correct[group] = group_correct.get(group, True) and target == prediction
    return 100.0 * float(np.mean(list(group_correct.values())))


# SQuAD answer normalisation, written here by hand after the official SQuAD v1.1 evaluation
# script (the same steps as T5's `qa_utils.normalize_squad`): lowercase, drop punctuation, drop
# the articles a/an/the, collapse whitespace. No maintained pip package ships it on its own.
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation.

    >>> normalize_answer("  An Apple, the  pie!")
    'apple pie'
    """
    text = text.lower()
    text = "".join(char for char in text if char not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 of two normalised answers (0 when they share no token, as in SQuAD)."""
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _best_over_answers(
    score: Callable[[str, str], float],
    answers: Sequence[Sequence[str]],
    predictions: Sequence[str],
) -> float:
    """Mean over examples of the best `score(prediction, gold)` over that example's gold answers."""
    best = [
        max((score(prediction, gold) for gold in golds), default=0.0)
        for golds, prediction in zip(answers, predictions, strict=True)
    ]
    return 100.0 * float(np.mean(best))


def qa_exact_match(answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> float:
    """SQuAD/ReCoRD exact match: the normalised prediction equals some normalised gold answer."""
    return _best_over_answers(
        lambda prediction, gold: float(normalize_answer(prediction) == normalize_answer(gold)),
        answers,
        predictions,
    )


def qa_f1(answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> float:
    """SQuAD/ReCoRD F1: the best token-overlap F1 against any gold answer."""
    return _best_over_answers(_token_f1, answers, predictions)


# Words ignored when comparing a predicted WSC referent with the gold one (T5's
# `postprocessors.wsc_simple`).
_DETERMINERS = frozenset(
    "a an few her his each every many much my our some that the their these this those which "
    "whose your".split()
)


def referent_matches(prediction: str, referent: str) -> bool:
    """Whether a generated WSC referent names the gold referent, after T5's loose comparison:
    case and determiners are ignored and one word set may contain the other ("fuzzy bunny" vs
    "the bunny"), but a possessive never matches a non-possessive ("Bob" vs "Bob's hat").

    >>> referent_matches("The trophy", "trophy")
    True
    >>> referent_matches("Bob", "Bob's hat")
    False
    """

    def words(text: str) -> set[str]:
        return {word for word in text.strip().lower().split() if word not in _DETERMINERS}

    prediction_words, referent_words = words(prediction), words(referent)
    if not prediction_words or not referent_words:
        return False
    if ("'" in prediction) != ("'" in referent):
        return False
    return prediction_words <= referent_words or referent_words <= prediction_words


class ScoringInputs(NamedTuple):
    """Everything a metric may need about N scored examples (each sequence has length N)."""

    targets: Sequence[Hashable]  # class index, WSC 0/1 label, or target text
    predictions: Sequence[Hashable]  # the same space as targets; INVALID for an unknown word
    texts: Sequence[str]  # the raw predicted strings
    answers: Sequence[Sequence[str]]  # every gold answer of each example (QA metrics)
    groups: Sequence[Hashable]  # the group of each example (MultiRC: its question)
    num_classes: int | None  # number of label words, None for free-text tasks


_METRIC_FNS: Mapping[str, Callable[[ScoringInputs], float]] = {
    "accuracy": lambda s: accuracy(s.targets, s.predictions),
    "f1": lambda s: binary_f1(s.targets, s.predictions),
    "macro_f1": lambda s: macro_f1(s.targets, s.predictions, num_classes=s.num_classes),
    "exact_match": lambda s: group_exact_match(s.targets, s.predictions, groups=s.groups),
    "qa_exact_match": lambda s: qa_exact_match(s.answers, s.texts),
    "qa_f1": lambda s: qa_f1(s.answers, s.texts),
}
METRIC_NAMES = tuple(_METRIC_FNS)


def compute_metrics(names: Sequence[str], inputs: ScoringInputs) -> dict[str, float]:
    """`{name: value}` for each metric name (one of `METRIC_NAMES`)."""
    if not inputs.targets:
        raise ValueError("cannot score zero examples")
    unknown = [name for name in names if name not in _METRIC_FNS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known metrics: {', '.join(METRIC_NAMES)}")
    return {name: _METRIC_FNS[name](inputs) for name in names}
