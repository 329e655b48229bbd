"""A campaign's designed prompts are scored on the trials' own evaluation examples."""

from __future__ import annotations

import pytest

from softprompt.core.tasks import get_task
from softprompt.core.text_prompts import evaluate_text_prompt
from softprompt.search.baselines import score_baselines
from softprompt.search.campaign import parse_campaign
from softprompt.store import Store

TEMPLATE = "{premise} Question: {hypothesis}?"


@pytest.mark.parametrize("eval_split, scored_on", [("validation[200:]", "validation[200:]"),
                                                   ("selection", "validation")])
def test_designed_prompts_are_scored_where_the_trials_evaluate(tmp_path, tiny_model, eval_split, scored_on):
    campaign = parse_campaign({"name": "b", "tasks": ["rte"], "model": "t5-tiny-random", "dtype": "float32", "space": "none",
                               "fixed": {"eval_split": eval_split, "selection_examples": 8},
                               "max_eval_examples": 12, "baselines": [{"template": TEMPLATE, "shots": 1}]},
                              source="t")
    [scored] = score_baselines(campaign, tiny_model, Store(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    task = get_task("rte")
    expected = evaluate_text_prompt(tiny_model, task, template=TEMPLATE, shots=1, split=scored_on, max_examples=12)
    assert scored.score == pytest.approx(task.primary_score(expected))
    elsewhere = evaluate_text_prompt(tiny_model, task, template=TEMPLATE, shots=1, max_examples=12,
                                     split="validation" if scored_on != "validation" else "validation[200:]")
    assert scored.score != pytest.approx(task.primary_score(elsewhere))   # the split is what decides
