"""The paper's optimiser: Adafactor with a Table 6 learning-rate schedule.

Defaults are the paper's (§3, Appendix A): constant learning rate 0.3, decay rate (beta2
decay) 0.8, weight decay 1e-5, parameter scaling off. Table 6 adds linear warmup from 0 and a
staircase decay: the rate is multiplied by `decay_factor` every `steps_per_decay` steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax


class OptimizerConfig(NamedTuple):
    learning_rate: float = 0.3
    parameter_scaling: bool = False   # Adafactor's multiply_by_parameter_scale
    decay_rate: float = 0.8           # Adafactor's second-moment decay exponent
    weight_decay: float = 1e-5
    warmup_steps: int = 0             # 0 = off; else linear from 0 to learning_rate
    decay_factor: float | None = None  # None = off
    steps_per_decay: int | None = None  # None = off


def learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    """step -> learning rate: linear warmup, then constant with an optional staircase decay.

    Example:
      >>> schedule = learning_rate_schedule(OptimizerConfig(0.3, warmup_steps=10, decay_factor=0.5,
      ...                                                   steps_per_decay=100))
      >>> [round(float(schedule(step)), 4) for step in (5, 50, 250)]
      [0.15, 0.3, 0.075]
    """
    base = config.learning_rate
    decays = bool(config.decay_factor) and bool(config.steps_per_decay)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        rate = jnp.asarray(base, jnp.float32)
        if config.warmup_steps:
            rate = rate * jnp.minimum(1.0, step / config.warmup_steps)
        if decays:
            rate = rate * config.decay_factor ** jnp.floor(step / config.steps_per_decay)
        return rate

    return schedule


def make_optimizer(config: OptimizerConfig = OptimizerConfig()) -> optax.GradientTransformation:
    """optax Adafactor configured as in the paper, driven by `learning_rate_schedule`."""
    return optax.adafactor(
        learning_rate=learning_rate_schedule(config),
        decay_rate=config.decay_rate,
        multiply_by_parameter_scale=config.parameter_scaling,
        weight_decay_rate=config.weight_decay or None,
    )
