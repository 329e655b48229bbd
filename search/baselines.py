"""A campaign's designed text prompts (its `baselines`), scored once in the driver on the same
examples as the trials' evaluations (their `eval_split`, or validation where the trials evaluate
on held-out training records) and recorded as baseline runs beside them — the honest comparison
every tuned prompt and ensemble is shown against."""

from __future__ import annotations

import logging
from typing import NamedTuple

from softprompt.core.config import SELECTION_SPLIT, TrainConfig
from softprompt.core.models.base import FrozenModel
from softprompt.core.tasks import get_task
from softprompt.core.text_prompts import evaluate_text_prompt
from softprompt.store import RunRecord, Store
from softprompt.store.names import METRIC_SCORE, TAG_BASELINE, TAG_TASK

from .campaign import Campaign

logger = logging.getLogger(__name__)


class BaselineScore(NamedTuple):
    name: str
    task: str
    shots: int
    score: float

    @classmethod
    def of(cls, run: RunRecord) -> "BaselineScore":
        return cls(run.tags.get(TAG_BASELINE, run.name), run.tags.get(TAG_TASK, ""),
                   int(run.params.get("shots", "0")), float(run.metrics.get(METRIC_SCORE, float("nan"))))


def score_baselines(campaign: Campaign, model: FrozenModel, store: Store) -> list[BaselineScore]:
    """Scores every designed prompt of the campaign on each of its tasks, skipping those already
    recorded (a resumed campaign); returns all of them."""
    experiment = store.prepare_experiment(campaign.name)
    default = TrainConfig.eval_split                                 # "validation"
    split = campaign.fixed.get("eval_split", default)
    split = default if split == SELECTION_SPLIT else split          # few-shot demonstrations come from train
    for task_name in campaign.tasks:
        task = get_task(task_name, source=campaign.data_source)
        done = {BaselineScore.of(run).name for run in store.baseline_runs([experiment], task=task.name)}
        for baseline in campaign.baselines:
            if baseline.label in done:
                continue
            metrics = evaluate_text_prompt(model, task, template=baseline.template, shots=baseline.shots,
                                           seed=baseline.seed, split=split, max_examples=campaign.max_eval_examples,
                                           data_dir=campaign.data_dir)
            score = float(task.primary_score(metrics))
            logger.info("designed prompt %s on %s: %.2f", baseline.label, task.name, score)
            store.log_baseline(campaign.name, name=baseline.label, task=task.name,
                               params={"template": baseline.template, "shots": baseline.shots,
                                       "seed": baseline.seed}, metrics=metrics | {METRIC_SCORE: score})
    return recorded_baselines(campaign.name, store)


def recorded_baselines(campaign: str, store: Store) -> list[BaselineScore]:
    """The designed prompts recorded for a campaign, best first."""
    experiment = store.experiment_id(campaign)
    runs = store.baseline_runs([experiment]) if experiment else []
    return sorted((BaselineScore.of(run) for run in runs), key=lambda b: -b.score)
