"""A campaign's trial scheduler (ASHA, PBT or none) and search algorithm (random or Optuna).

Time is counted in evaluations (`training_iteration`: one Tune report per evaluation), so ASHA's
grace period and PBT's perturbation interval are numbers of evaluations.
"""

from __future__ import annotations

from typing import Any

from . import space as space_lib
from .campaign import Campaign


def make_scheduler(campaign: Campaign) -> Any:
    """ASHA (default): stops trials whose score trails at a rung; PBT: copies the best trials'
    checkpoints and perturbs their learning rate; none: FIFO (every trial runs to the end)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    settings = campaign.scheduler
    if settings.type == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max(campaign.max_evaluations(), 1),
                             grace_period=min(settings.grace_period, max(campaign.max_evaluations(), 1)),
                             reduction_factor=settings.reduction_factor)
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
