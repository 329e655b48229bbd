"""A campaign's trial scheduler (ASHA, median, PBT or none) and search algorithm (random or Optuna).

Time is counted in evaluations (`training_iteration`: one Tune report per evaluation), so ASHA's
grace period and PBT's perturbation interval are numbers of evaluations. (Imported by the driver
only when it builds a Tuner: it imports Ray.)
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import (ASHAScheduler, FIFOScheduler, MedianStoppingRule, PopulationBasedTraining,
                                 TrialScheduler)

from . import space as space_lib
from .campaign import Campaign


class MedianStopping(MedianStoppingRule):
    """Tune's median stopping rule less its time-sharing: with fewer than `min_samples_required`
    other trials to take a median from, Tune's rule pauses a trial for a pending one (a checkpoint,
    a restart and a restore later); this one lets it run on, so only a stop frees a slot."""

    def _on_insufficient_samples(self, tune_controller, trial, time) -> str:
        return TrialScheduler.CONTINUE


def make_scheduler(campaign: Campaign) -> Any:
    """ASHA (default): stops trials whose score trails at a rung; median: stops a trial whose best
    score trails the median of the other trials' running means (`MedianStoppingRule`); PBT: copies
    the best trials' checkpoints and perturbs their learning rate; none: FIFO (every trial runs to
    the end). A stopped trial's slot goes to the next pending trial at once (docs/campaigns.md)."""
    settings = campaign.scheduler
    if settings.type == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max(campaign.max_evaluations(), 1),
                             grace_period=min(settings.grace_period, max(campaign.max_evaluations(), 1)),
                             reduction_factor=settings.reduction_factor)
    if settings.type == "median":
        return MedianStopping(time_attr="training_iteration", grace_period=settings.grace_period,
                              min_samples_required=settings.min_samples)
    if settings.type == "pbt":
        axis = campaign.axes()["learning_rate"]  # searched: checked with the campaign
        return PopulationBasedTraining(time_attr="training_iteration",
                                       perturbation_interval=settings.perturbation_interval,
                                       hyperparam_mutations={"learning_rate": space_lib.tune_domain(axis)})
    return FIFOScheduler()


def make_search_alg(campaign: Campaign) -> Any:
    """Random search (default; each sampled configuration is repeated over the task and seed grid
    with its random values held constant), or Optuna's TPE when installed."""
    if campaign.search.type == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        from ray.tune.search import ConcurrencyLimiter

        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=campaign.search.seed))
        if campaign.max_concurrent_trials:
            return ConcurrencyLimiter(searcher, max_concurrent=campaign.max_concurrent_trials)
        return searcher
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(constant_grid_search=True, random_state=campaign.search.seed,
                                 max_concurrent=campaign.max_concurrent_trials or 0)

