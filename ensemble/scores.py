"""The members' scores on a split, computed ONCE: K prompts x B examples in one pass over the
frozen model, then every vote, selection and table is arithmetic over them — greedy, soft,
learned and top selection (`build`), Table 3 (`evaluate`) and the report (`report`).

    K prompts, B examples  ->  ONE pass (K x B rows)  ->  MemberScores  ->  vote(weights) / value(answers)

Classification keeps each prompt's label log-likelihoods [K, B, C], so any weighted vote under any
rule is `voting.combine` over them; free text keeps each prompt's greedy answer and its
log-likelihood per example, so any weighted vote is `voting.majority_vote`. `metric_value` is THE
reading of a task's metric off its answers (a named metric, or `score`: the task's primary score).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from softprompt.core.evaluation import encode_inputs
from softprompt.core.inference import label_targets
from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import stack_prompts
from softprompt.core.tasks import TaskSpec

from .predict import EnsembleInput, label_scores, member_answers
from .voting import combine, label_probabilities, majority_vote


def default_metric(task: TaskSpec) -> str:
    """The task's selection metric: its primary metric, else `score` (the mean of its metrics)."""
    if task.primary_metric:
        return task.primary_metric
    return task.metrics[0] if len(task.metrics) == 1 else "score"


def metric_value(task: TaskSpec, metric: str, examples: Sequence, answers: Sequence[str]) -> float:
    """`metric` of `answers` [B] to `examples` [B]: one of the task's metrics, or `score` (its
    primary score)."""
    metrics = task.score(examples, answers)
    return float(task.primary_score(metrics)) if metric == "score" else float(metrics[metric])


@dataclasses.dataclass(frozen=True)
class MemberScores:
    """K prompts' answers to B examples of one split, and `metric` to judge them by."""

    task: TaskSpec
    examples: Sequence                    # [B]
    metric: str
    labels: np.ndarray | None = None      # [K, B, C] label log-likelihoods (classification)
    decoded: Sequence[tuple[Sequence[str], np.ndarray]] | None = None   # free text: per example ([K] answers,
                                                                         # [K] their log-likelihoods)

    @classmethod
    def compute(cls, model: FrozenModel, task: TaskSpec, prompts: Sequence[np.ndarray], examples: Sequence, *,
                metric: str) -> "MemberScores":
        """Every prompt ([P_k, E] each) on every example, in one pass; `model` formats targets as
        the prompts were trained (`core.sentinel.model_for`)."""
        if not examples:
            raise ValueError(f"no {task.name} examples to score the prompts on")
        table = stack_prompts(list(prompts))
        count = len(prompts)
        encoded = encode_inputs(model, task, examples)
        if task.free_text:
            inputs = [EnsembleInput(ids, 0, (1,) * count, None, None, "majority", task.max_target_tokens)
                      for ids in encoded]
            decoded, _ = member_answers(model, table, inputs)
            return cls(task, examples, metric, decoded=decoded)
        targets = tuple(map(tuple, label_targets(model, task.label_words)))
        inputs = [EnsembleInput(ids, 0, (1,) * count, targets, task.label_words) for ids in encoded]
        scores, _ = label_scores(model, table, inputs)
        return cls(task, examples, metric, labels=np.stack(scores, axis=1))

    @property
    def count(self) -> int:
        """K, the number of prompts."""
        return int(self.labels.shape[0]) if self.labels is not None else len(self.decoded[0][0])

    def take(self, prompts: Sequence[int]) -> "MemberScores":
        """The scores of the prompts at indices `prompts` only, in that order."""
        if self.labels is not None:
            return dataclasses.replace(self, labels=self.labels[list(prompts)])
        return dataclasses.replace(self, decoded=[([texts[k] for k in prompts], np.asarray(likelihoods)[list(prompts)])
                                                  for texts, likelihoods in self.decoded])

    def vote(self, weights: Sequence[float], rule: str = "majority", bias: Sequence[float] | None = None) -> list[str]:
        """The answers [B] of the ensemble weighing prompt k by `weights[k]` ([K]) under `rule`
        (`bias`: the learned vote's [C]); free text takes the weighted majority."""
        if self.labels is None:
            return [majority_vote(texts, likelihoods, weights=weights).label for texts, likelihoods in self.decoded]
        winners, _ = combine(self.labels, weights=weights, rule=rule, bias=bias)
        return [self.task.label_words[c] for c in winners]

    def answers(self) -> list[list[str]]:
        """Each prompt's own answers: [K][B]."""
        if self.labels is None:
            return [[texts[k] for texts, _ in self.decoded] for k in range(self.count)]
        return [[self.task.label_words[c] for c in row] for row in self.labels.argmax(axis=-1)]

    def value(self, answers: Sequence[str]) -> float:
        """`metric` of answers [B] to these examples."""
        return metric_value(self.task, self.metric, self.examples, answers)

    def member_values(self) -> list[float]:
        """Each prompt's own `metric`: [K]."""
        return [self.value(answers) for answers in self.answers()]

    def unknown_labels(self) -> list[str]:
        """The examples' targets that are not one of the task's label words, sorted (all of them
        for free text)."""
        words = list(self.task.label_words or ())
        return sorted({example.targets for example in self.examples if example.targets not in words})

    def gold(self) -> np.ndarray:
        """[B] each example's gold label index (classification, every target a label word)."""
        words = list(self.task.label_words)
        return np.array([words.index(example.targets) for example in self.examples])

    def gold_log_probability(self) -> Callable[[np.ndarray], float] | None:
        """[K] weights -> the weighted ensemble's mean log-probability of each example's gold label
        (the weighted mean of the prompts' label probabilities): greedy selection's tie-break, a
        continuous score that prefers a second good prompt to the same one twice. None for free
        text, or when an example's target is not one of the label words."""
        if self.labels is None or self.unknown_labels():
            return None
        gold = self.gold()
        probabilities = label_probabilities(self.labels)[:, np.arange(len(gold)), gold]      # [K, B]

        def mean_log_probability(weights: np.ndarray) -> float:
            mixed = np.asarray(weights, np.float64) @ probabilities / np.sum(weights)
            return float(np.mean(np.log(np.maximum(mixed, 1e-12))))

        return mean_log_probability
