"""The paper's optimiser: Adafactor with a Table 6 learning-rate schedule.

Defaults are the paper's (§3, Appendix A): constant learning rate 0.3, decay rate (beta2
decay) 0.8, weight decay 1e-5, parameter scaling off. Table 6 adds linear warmup from 0 and a
staircase decay: the rate is multiplied by `decay_factor` every `steps_per_decay` steps.

The numeric settings live in the optimiser STATE (`optax.inject_hyperparams`), not in the compiled
update: the training loop writes each step's learning rate into the state (`with_learning_rate`),
so one compiled step serves every learning rate, schedule, decay rate and weight decay — trials of
a campaign that differ only in those share one compilation (through JAX's persistent cache).
Only `parameter_scaling` changes the update's structure.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import optax


class OptimizerConfig(NamedTuple):
    learning_rate: float = 0.3
    parameter_scaling: bool = False   # Adafactor's multiply_by_parameter_scale
    decay_rate: float = 0.8           # Adafactor's second-moment decay exponent
    weight_decay: float = 1e-5
    warmup_steps: int = 0             # 0 = off; else linear from 0 to learning_rate
    decay_factor: float | None = None  # None = off
    steps_per_decay: int | None = None  # None = off


def learning_rate_schedule(config: OptimizerConfig):
    """step -> learning rate: linear warmup, then constant with an optional staircase decay.

    Example:
      >>> schedule = learning_rate_schedule(OptimizerConfig(0.3, warmup_steps=10, decay_factor=0.5,
      ...                                                   steps_per_decay=100))
      >>> [round(float(schedule(step)), 4) for step in (5, 50, 250)]
      [0.15, 0.3, 0.075]
    """
    base = config.learning_rate
    decays = bool(config.decay_factor) and bool(config.steps_per_decay)

    def schedule(step: int) -> np.float32:
        rate = base
        if config.warmup_steps:
            rate *= min(1.0, step / config.warmup_steps)
        if decays:
            rate *= config.decay_factor ** (step // config.steps_per_decay)
        return np.float32(rate)

    return schedule


# Adafactor arguments that shape the update (Python branches on them): compiled in, never injected.
_STRUCTURAL = ("min_dim_size_to_factor", "multiply_by_parameter_scale", "clipping_threshold", "momentum",
               "dtype_momentum", "factored", "eps", "decay_offset")


def make_optimizer(config: OptimizerConfig = OptimizerConfig()) -> optax.GradientTransformation:
    """optax Adafactor configured as in the paper, its numeric settings injected into the state
    (set the learning rate of each step with `with_learning_rate`; `learning_rate_schedule` gives it)."""
    return optax.inject_hyperparams(optax.adafactor, static_args=_STRUCTURAL)(
        learning_rate=config.learning_rate,
        decay_rate=config.decay_rate,
        multiply_by_parameter_scale=config.parameter_scaling,
        weight_decay_rate=config.weight_decay,   # 0 adds nothing
    )


def with_learning_rate(opt_state: optax.InjectHyperparamsState, learning_rate) -> optax.InjectHyperparamsState:
    """`opt_state` with the learning rate of the coming update (traceable: use inside jit)."""
    return opt_state._replace(hyperparams={**opt_state.hyperparams,
                                           "learning_rate": jnp.asarray(learning_rate, jnp.float32)})
