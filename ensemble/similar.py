"""Which registered prompt to transfer from (SPoT, Vu et al. 2022, retrieval by task embedding).

The criterion is cheap and needs no training on the target task: the cosine similarity between

- the target task's label vector: the mean of its class-label embeddings (what the `class_labels`
  init puts in the prompt) [E], and
- a registered ensemble's prompt vector: its best member's prompt averaged over positions [E]
  (SPoT's "average tokens" task embedding),

both in the frozen model's input-embedding space. Only ensembles built on the same model (same
fingerprint) are comparable; the others are listed as skipped. Start a run from the top one with
`--init-from NAME@ALIAS` (`store/transfer.py`).
"""

from __future__ import annotations

import tempfile
from typing import NamedTuple

import jax
import numpy as np

from softprompt.core.models.base import FrozenModel
from softprompt.core.prompt_init import class_labels
from softprompt.core.prompts import SoftPrompt
from softprompt.core.tasks import get_task
from softprompt.store import DEFAULT_ALIAS, Store
from softprompt.store.transfer import best_member


class Neighbour(NamedTuple):
    reference: str      # NAME@ALIAS, what --init-from takes
    version: str        # the version the alias names
    task: str           # the task the ensemble was built for
    member: int         # the member whose prompt was compared (the best one)
    cosine: float       # similarity of its prompt vector to the target task's label vector


def label_vector(model: FrozenModel, task: str) -> np.ndarray:
    """The mean of the task's class-label embeddings: [E]. Classification tasks only."""
    spec = get_task(task)
    if not spec.label_words:
        raise ValueError(f"task {spec.name!r} has no label words: similarity needs a classification task")
    labels = class_labels(jax.random.key(0), model, length=len(spec.label_words), label_words=spec.label_words)
    return np.asarray(labels, np.float32).mean(axis=0)


def prompt_vector(prompt: np.ndarray) -> np.ndarray:
    """A prompt [P, E] averaged over its positions: [E]."""
    return np.asarray(prompt, np.float32).mean(axis=0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def rank_similar(store: Store, model: FrozenModel, task: str, *,
                 alias: str = DEFAULT_ALIAS) -> tuple[list[Neighbour], list[str]]:
    """The ensembles with `alias` on `model`, most similar first, and the references skipped
    because they were built on another model."""
    target = label_vector(model, task)
    ranked, skipped = [], []
    for reference in store.ensembles_with_alias(alias):
        registered = store.resolve_ensemble(reference)
        if registered.manifest.model_fingerprint != model.fingerprint:
            skipped.append(reference)
            continue
        number = best_member(registered.manifest)
        with tempfile.TemporaryDirectory() as folder:
            prompt = SoftPrompt.load(store.fetch_member_prompt(registered, number, folder), model=model)
        ranked.append(Neighbour(reference, registered.version, registered.manifest.task, number,
                                cosine(prompt_vector(prompt.embeddings), target)))
    return sorted(ranked, key=lambda n: -n.cosine), skipped
