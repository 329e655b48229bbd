"""An ensemble's predictions in ONE batched pass: each input is replicated across the N member
prompts (paper §6, Figure 2), so the frozen model runs over N x B rows together — never N
separate passes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from softprompt.core.inference import Query, greedy_decode, label_log_likelihoods, label_targets
from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import PromptTable

from .voting import Vote, majority_vote, vote_classification


def replicated_queries(encoded: Sequence[list[int]], members: int, *, first_prompt: int = 0) -> list[Query]:
    """Each input under each member prompt, input-major: [B * N] queries."""
    return [Query(ids, first_prompt + n) for ids in encoded for n in range(members)]


def member_label_scores(model: FrozenModel, table: PromptTable, encoded: Sequence[list[int]],
                        label_words: Sequence[str]) -> np.ndarray:
    """Every member's log-likelihood of every label for every input: [B, N, C], one pass."""
    members = int(table.embeddings.shape[0])
    queries = replicated_queries(encoded, members)
    scores = label_log_likelihoods(model, table, queries, label_targets(model, label_words))
    return scores.reshape(len(encoded), members, len(label_words))


def ensemble_predict(model: FrozenModel, table: PromptTable, task, encoded: Sequence[list[int]], *,
                     rule: str = "majority") -> list[Vote]:
    """The voted answer of the N prompts in `table` for each encoded input."""
    if task.label_words:
        scores = member_label_scores(model, table, encoded, task.label_words)
        return [vote_classification(example, task.label_words, rule=rule) for example in scores]
    if rule != "majority":
        raise ValueError(f"free-text task {task.name!r} supports only the majority vote rule")
    members = int(table.embeddings.shape[0])
    texts, likelihoods = greedy_decode(model, table, replicated_queries(encoded, members),
                                       max_new_tokens=task.max_target_tokens)
    return [majority_vote(texts[b * members:(b + 1) * members], likelihoods[b * members:(b + 1) * members])
            for b in range(len(encoded))]
