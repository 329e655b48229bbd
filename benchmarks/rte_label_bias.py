"""Why RTE sits at the majority class on Gemma 3 270M: label words of unequal token length under
summed log-likelihood. For the built-in `rte` (labels `entailment` / `not_entailment`) and
`examples/tasks/rte-qa.yaml` (premise + question, labels `Yes` / `No`), an untrained class-label
prompt ranks all 277 validation pairs; printed per task: each label's tokens, the share of pairs
each label is predicted for (gold: 52.7% / 47.3%), and accuracy — summed (softprompt's rank
classification) and, as a probe, per-token (length-normalised) log-likelihood.

    .venv/bin/python benchmarks/rte_label_bias.py [--dtype bfloat16] [--max-examples N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]


def label_bias(model, task_name: str, *, max_examples: int | None) -> dict:
    from softprompt.core.evaluation import encode_inputs
    from softprompt.core.inference import Query, label_log_likelihoods, label_targets
    from softprompt.core.multi_prompt import stack_prompts
    from softprompt.core.prompts import SoftPrompt
    from softprompt.core.tasks import get_task

    task = get_task(task_name)
    examples = task.examples("validation", limit=max_examples, training=False)
    prompt = SoftPrompt.init(model, length=20, init="class_labels", seed=0, task=task.name,
                             label_words=task.label_words)
    targets = label_targets(model, task.label_words)
    queries = [Query(ids, 0) for ids in encode_inputs(model, task, examples)]
    summed = label_log_likelihoods(model, stack_prompts([prompt.embeddings]), queries, targets)    # [Q, C]
    per_token = summed / np.array([len(t) for t in targets])
    gold = np.array([task.label_words.index(ex.targets) for ex in examples])
    report = {"task": task.name, "examples": len(examples),
              "label_tokens": {w: len(t) for w, t in zip(task.label_words, targets)},
              "gold_share": {w: round(float(np.mean(gold == c)), 3) for c, w in enumerate(task.label_words)}}
    for name, scores in (("summed", summed), ("per_token", per_token)):
        predicted = scores.argmax(axis=1)
        report[name] = {"accuracy": round(float(np.mean(predicted == gold)) * 100, 1),
                        "predicted_share": {w: round(float(np.mean(predicted == c)), 3)
                                            for c, w in enumerate(task.label_words)}}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--max-examples", type=int, default=None)
    args = parser.parse_args()
    from softprompt.core.models import load_model

    model = load_model("gemma3-270m", dtype=args.dtype)
    for task in ("rte", str(REPOSITORY / "examples/tasks/rte-qa.yaml")):
        print(json.dumps(label_bias(model, task, max_examples=args.max_examples)))


if __name__ == "__main__":
    main()
