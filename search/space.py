"""The search space: the paper's Table 6 (Appendix A.2) as axes, their scaling, and Ray Tune objects.

An axis is one of `Choice`, `LogUniform`, `Uniform` or `Fixed`. `TABLE6` holds the paper's values;
a campaign overrides or fixes axes, shrinks the step and batch axes with `scale`, and
`tune_space` turns the result into a Ray Tune `param_space`. A sampled configuration becomes a
`TrainConfig` through `train_config`, which also applies the one coupling of Table 6: learning-rate
decay is off (`decay_factor` None) or on with a `steps_per_decay`.

Example:
    >>> axes = scale_axes(TABLE6, steps=0.01, batch_size=1 / 16)
    >>> axes["steps"], axes["batch_size"]
    (Choice(values=(100, 200, 300)), Choice(values=(2, 4, 8, 16, 32)))
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Union

from softprompt.core.config import TrainConfig


class Choice(NamedTuple):
    values: tuple


class Grid(NamedTuple):
    """Every value in turn (one trial per value, times the seeds), not a random draw."""

    values: tuple


class LogUniform(NamedTuple):
    low: float
    high: float


class Uniform(NamedTuple):
    low: float
    high: float


class Fixed(NamedTuple):
    value: Any


Axis = Union[Choice, Grid, LogUniform, Uniform, Fixed]

# Table 6 of the paper. "off" is None for the decay axes and 0 for warmup; the paper's "126" is 128.
TABLE6: dict[str, Axis] = {
    "learning_rate": LogUniform(0.001, 0.5),
    "parameter_scaling": Choice((True, False)),
    "batch_size": Choice((32, 64, 128, 256, 512)),
    "steps": Choice((10_000, 20_000, 30_000)),
    "warmup_steps": Choice((0, 2_000, 3_000)),
    "decay_factor": Choice((None, 0.1, 0.5)),
    "steps_per_decay": Choice((None, 4_000, 6_000, 8_000)),
}
# Axes a campaign may search besides Table 6 (fixed at TrainConfig's defaults unless overridden).
PROMPT_AXES = ("prompt_length", "init", "reparam")
SEARCHABLE = tuple(TABLE6) + PROMPT_AXES
STEP_AXES = ("steps", "warmup_steps", "steps_per_decay")   # shrunk by `scale.steps`
BATCH_AXES = ("batch_size",)                                # shrunk by `scale.batch_size`


def axis_values(axis: Axis) -> tuple:
    """The values an axis can take: its choices, its bounds, or its one value."""
    if isinstance(axis, (Choice, Grid)):
        return axis.values
    if isinstance(axis, Fixed):
        return (axis.value,)
    return (axis.low, axis.high)


def _scaled(value: Any, factor: float) -> Any:
    if value is None or value == 0 or factor == 1:
        return value
    return max(1, round(value * factor))


def scale_axes(axes: Mapping[str, Axis], *, steps: float = 1.0, batch_size: float = 1.0) -> dict[str, Axis]:
    """Multiplies every value of the step axes by `steps` and of the batch axis by `batch_size`
    (rounded, at least 1; 0 and None, meaning "off", stay), dropping duplicate choices."""
    factors = {name: steps for name in STEP_AXES} | {name: batch_size for name in BATCH_AXES}
    scaled: dict[str, Axis] = {}
    for name, axis in axes.items():
        factor = factors.get(name, 1.0)
        if isinstance(axis, (Choice, Grid)):
            axis = type(axis)(tuple(dict.fromkeys(_scaled(v, factor) for v in axis.values)))
        elif isinstance(axis, Fixed):
            axis = Fixed(_scaled(axis.value, factor))
        elif factor != 1:
            axis = type(axis)(_scaled(axis.low, factor), _scaled(axis.high, factor))
        scaled[name] = axis
    return scaled


def max_value(axis: Axis) -> Any:
    """The largest value an axis can take (None values ignored)."""
    return max(v for v in axis_values(axis) if v is not None)


def tune_domain(axis: Axis) -> Any:
    """One axis as a Ray Tune search-space object (a plain value when fixed)."""
    from ray import tune

    if isinstance(axis, Choice):
        return tune.choice(list(axis.values))
    if isinstance(axis, Grid):
        return tune.grid_search(list(axis.values))
    if isinstance(axis, LogUniform):
        return tune.loguniform(axis.low, axis.high)
    if isinstance(axis, Uniform):
        return tune.uniform(axis.low, axis.high)
    return axis.value


def tune_space(axes: Mapping[str, Axis], *, fixed: Mapping[str, Any] | None = None,
               grid: Mapping[str, list] | None = None) -> dict[str, Any]:
    """A Ray Tune `param_space`: sampled axes, fixed settings, and grid axes (`tune.grid_search`).

    The decay coupling is carried by `steps_per_decay`, which never samples None: `train_config`
    turns it off whenever `decay_factor` is None.
    """
    from ray import tune

    space = {name: tune_domain(_without_none_periods(name, axis)) for name, axis in axes.items()}
    space |= dict(fixed or {})
    for name, values in (grid or {}).items():
        space[name] = tune.grid_search(list(values)) if len(values) > 1 else values[0]
    return space


def _without_none_periods(name: str, axis: Axis) -> Axis:
    if name == "steps_per_decay" and isinstance(axis, (Choice, Grid)):
        periods = tuple(v for v in axis.values if v is not None)
        return type(axis)(periods) if periods else Fixed(None)
    return axis


def train_config(sampled: Mapping[str, Any]) -> TrainConfig:
    """The `TrainConfig` of one sampled configuration (decay off when `decay_factor` is None)."""
    values = dict(sampled)
    if values.get("decay_factor") is None:
        values["steps_per_decay"] = None
    return TrainConfig.from_dict(values)


def check_decay_coupling(axes: Mapping[str, Axis]) -> str | None:
    """Why the decay axes cannot be sampled together, or None when they can: whenever
    `decay_factor` can be set, `steps_per_decay` must offer a period."""
    factors = axis_values(axes.get("decay_factor", Fixed(None)))
    periods = axis_values(axes.get("steps_per_decay", Fixed(None)))
    if any(f is not None for f in factors) and not any(p is not None for p in periods):
        return "must offer a period (not only None) when decay_factor can be set"
    return None


INTEGER_AXES = ("batch_size", "steps", "warmup_steps", "steps_per_decay", "prompt_length")


def is_finite_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
