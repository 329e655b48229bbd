"""The notebook surface of `core`: load a model, train, evaluate, predict, explain.

    >>> from softprompt.core import api
    >>> result = api.train(api.TrainConfig(task="rte", steps=20, batch_size=4, eval_every=10))   # doctest: +SKIP
    >>> api.evaluate(prompt_dir, task="rte")          # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .batching import encode_pair
from .config import TrainConfig
from .evaluation import evaluate_prompt, predict as predict_with_table
from .explain import Neighbour, nearest_tokens
from .models import load_model
from .models.base import FrozenModel
from .multi_prompt import stack_prompts
from .progress import work_progress
from .prompts import SoftPrompt, read_metadata
from .tasks import get_task
from .train import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "SoftPrompt", "evaluate", "evaluate_text_prompt", "explain", "load_model",
           "load_prompt", "predict", "train"]


def load_prompt(directory: str | os.PathLike, *, model: str | None = None) -> tuple[SoftPrompt, FrozenModel]:
    """A prompt artifact and the frozen model it belongs to (its recorded model unless `model`
    names another — which must then have the same fingerprint)."""
    meta = read_metadata(directory)
    hyper = meta.get("hyperparameters", {})
    from .sentinel import model_for

    frozen = model_for(model or hyper.get("model", "t5-tiny-random"), hyper.get("target_format", "plain"),
                       dtype=hyper.get("dtype", "float32"))
    return SoftPrompt.load(directory, model=frozen), frozen


def evaluate(directory: str | os.PathLike, *, task: str, model: str | None = None, split: str = "validation",
             max_examples: int | None = None, data_dir: str | None = None,
             data_source: str = "jsonl") -> dict[str, float]:
    """The task's metrics for a saved prompt — also zero-shot on another task with the same label
    space (domain transfer, e.g. a QQP prompt on MRPC)."""
    prompt, frozen = load_prompt(directory, model=model)
    spec = get_task(task, source=data_source)
    examples = spec.examples(split, data_dir=data_dir, limit=max_examples)
    with work_progress(f"evaluate on {spec.name} {split}", total=len(examples)):
        return evaluate_prompt(frozen, prompt.embeddings, spec, examples)


def predict(directory: str | os.PathLike, texts: Sequence[str], *, task: str, model: str | None = None) -> list[str]:
    """Predictions of a saved prompt for input texts already in the task's input format."""
    prompt, frozen = load_prompt(directory, model=model)
    spec = get_task(task)
    encoded = [encode_pair(frozen, text, "", max_input_tokens=spec.max_input_tokens,
                           max_target_tokens=spec.max_target_tokens).input_ids for text in texts]
    return predict_with_table(frozen, stack_prompts([prompt.embeddings]), spec, encoded)


def explain(directory: str | os.PathLike, *, top_k: int = 5, model: str | None = None) -> list[list[Neighbour]]:
    """The top-k nearest vocabulary tokens of each prompt position."""
    prompt, frozen = load_prompt(directory, model=model)
    return nearest_tokens(frozen, np.asarray(prompt.embeddings), top_k=top_k)


def evaluate_text_prompt(*, task: str, model: str, template: str, shots: int = 0, seed: int = 0,
                         split: str = "validation", max_examples: int | None = None,
                         data_dir: str | None = None, data_source: str = "jsonl") -> dict[str, float]:
    """The task's metrics for a designed text prompt, zero- or few-shot (see `core.text_prompts`)."""
    from .text_prompts import evaluate_text_prompt as run

    return run(load_model(model), get_task(task, source=data_source), template=template.replace("\\n", "\n"),
               shots=shots, seed=seed, split=split, max_examples=max_examples, data_dir=data_dir)
