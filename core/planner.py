"""Will a run fit, on how many devices, and how long will it take? Answered with no weights loaded.

`plan(hf_config, shape, device)`:
1. the abstract model (`core/abstract_models.py`): the parameter tree as ShapeDtypeStructs;
2. the training step the step server runs (`core.fused`: K trials' batches, a table of K prompts,
   the prompt gradient) lowered and compiled on abstract arguments, `jax.jit(...).lower(...)
   .compile()`, for the model cut to `a` and `a + 1` layers: XLA's `cost_analysis()` (FLOPs, bytes
   accessed) and `memory_analysis()` (temporary buffers: the activations) grow by one layer's
   worth between the two, and are extrapolated to the model's layers (compiling a 62-layer model
   on a laptop CPU would take minutes; two small ones take seconds). Families that cannot be
   traced yet use formulas instead (`traced: false`);
3. the frozen bytes each device holds on a `data` x `model` mesh, exact, from the same placement
   rules that shard the real weights (`core.sharding`), plus the activations of its rows;
4. the smallest mesh whose devices fit (10% headroom), and the step time from the device's
   published peak (`core/devices.py`): max(FLOPs / (devices * peak * efficiency),
   bytes accessed / (devices * bandwidth)).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh

from .abstract_models import AbstractModel, abstract_model
from .batching import Batch
from .devices import Device, get_device
from .sharding import DATA_AXIS, MODEL_AXIS, Placement, path_name

HEADROOM = 0.9           # the share of a device's memory a plan may use
MAX_DEVICES = 4096


class RunShape(NamedTuple):
    batch_size: int = 32         # rows per trial and step
    prompt_length: int = 100
    max_length: int = 256        # input tokens per row
    target_length: int = 8       # target tokens per row
    trials: int = 1              # trials fused into one step (one prompt each)
    dtype: str = "bfloat16"      # of the frozen weights

    @property
    def rows(self) -> int:
        return self.batch_size * self.trials


def plan_dtype(dtype: str, device: str) -> str:
    """`auto` (the frozen weights' dtype softprompt picks by hardware) as it resolves on `device`:
    bfloat16 on accelerators, float32 on the CPU."""
    if dtype != "auto":
        return dtype
    return "float32" if device.lower() == "cpu" else "bfloat16"


class StepCost(NamedTuple):
    flops: float                 # one step, all devices together
    bytes_accessed: float
    activation_bytes: float      # XLA's temporary buffers for all rows
    traced: bool                 # from XLA's analyses (True) or from formulas (False)


def _abstract_step_args(model: AbstractModel, shape: RunShape) -> tuple:
    """ShapeDtypeStructs of `core.fused._call_value_and_grad`'s arguments after ops."""
    s = jax.ShapeDtypeStruct
    rows, k = shape.rows, shape.trials
    batch = Batch(s((rows, shape.max_length), jnp.int32), s((rows, shape.max_length), bool),
                  s((rows, shape.target_length), jnp.int32), s((rows, shape.target_length), bool),
                  s((rows,), jnp.int32))
    return (model.training_params(), s((k, shape.prompt_length, model.d_model), jnp.float32),
            s((k, shape.prompt_length), bool), batch, s((k,), jnp.float32))


def compiled_cost(model: AbstractModel, shape: RunShape) -> tuple[float, float, float]:
    """(FLOPs, bytes accessed, temporary bytes) of one step of `model` as XLA compiles it here."""
    from .fused import _call_value_and_grad

    compiled = _call_value_and_grad.lower(model.ops, *_abstract_step_args(model, shape)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    return float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)), float(memory.temp_size_in_bytes)


def step_cost(model: AbstractModel, shape: RunShape) -> StepCost:
    """The step's cost: traced at two depths and extrapolated per layer, or by formula."""
    if model.ops is None or model.truncate is None:
        return _formula_cost(model, shape)
    first = 1 if model.family == "t5" else 2      # a decoder's last layer is special: keep it in both
    small, large = (compiled_cost(model.truncate(n), shape) for n in (first, first + 1))
    layers = model.num_layers // 2 if model.family == "t5" else model.num_layers   # T5: layer pairs
    grown = [a + (layers - first) * (b - a) for a, b in zip(small, large)]
    return StepCost(*grown, traced=True)


def _formula_cost(model: AbstractModel, shape: RunShape) -> StepCost:
    """A decoder-only step by formula: matmuls 2 FLOPs per weight per token forward, the backward
    to the activations (not to the frozen weights) as much again; attention scores and their
    products 4*S*heads*head_dim per token and layer, twice; activations kept for the backward:
    ~(8 E + 3 F) float32 values per token and layer plus the attention probabilities."""
    c = model.config
    tokens_per_row = 1 + shape.prompt_length + shape.max_length + shape.target_length
    tokens = shape.rows * tokens_per_row
    matmul_params = model.num_params - c["vocab_size"] * c["d_model"] * (1 if c["tied"] else 2)
    head = shape.rows * shape.target_length * c["vocab_size"] * c["d_model"] * 2 * 2
    attention = 4 * tokens * tokens_per_row * c["num_heads"] * c["head_dim"] * c["num_layers"]
    flops = 2 * (2 * matmul_params * tokens + attention) + head
    per_layer = tokens * (8 * c["d_model"] + 3 * c["ffn_dim"]) * 4 + shape.rows * c["num_heads"] * tokens_per_row ** 2 * 4
    weight_bytes = model.num_params * np.dtype(jnp.dtype(shape.dtype)).itemsize
    return StepCost(flops, weight_bytes + per_layer * c["num_layers"], per_layer * c["num_layers"], traced=False)


def weight_bytes_per_device(params: Any, data: int, model: int, strategy: str = "fsdp") -> int:
    """The most bytes of `params` (ShapeDtypeStructs) one device holds on a data x model mesh,
    split by the placement rules the real weights follow."""
    placement = Placement(AbstractMesh((data, model), (DATA_AXIS, MODEL_AXIS)), strategy)
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        spec = placement.weight_spec(path_name(path), leaf.shape)
        split = model if MODEL_AXIS in tuple(spec) else 1
        total += math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize // split
    return total


class Plan(NamedTuple):
    model: str
    family: str
    device: str
    params: int
    frozen_bytes: int
    bytes_per_device: int
    devices_needed: int
    mesh: str                      # "DATAxMODEL"
    step_flops: float
    projected_step_s: float
    projected_campaign_h: float
    fits: bool
    traced: bool

    def to_dict(self) -> dict:
        return self._asdict()


def choose_mesh(params: Any, cost: StepCost, shape: RunShape, device: Device, *, strategy: str = "fsdp",
                max_devices: int = MAX_DEVICES) -> tuple[int, int, int] | None:
    """(data, model, bytes per device) of the fewest devices that fit, most data-parallel first; None
    if none up to `max_devices` does. A device holds its share of the weights and the activations
    of its rows (the rows split over `data`)."""
    devices = 1
    while devices <= max_devices:
        for data in sorted((d for d in range(1, devices + 1) if devices % d == 0 and shape.rows % d == 0), reverse=True):
            model = devices // data
            held = weight_bytes_per_device(params, data, model, strategy) + cost.activation_bytes / data
            if held <= HEADROOM * device.memory_bytes:
                return data, model, int(held)
        devices *= 2
    return None


def plan(hf_config: dict, shape: RunShape, device: str, *, name: str = "", steps: int = 30_000,
         trials_total: int | None = None, strategy: str = "fsdp", max_devices: int = MAX_DEVICES) -> Plan:
    """The plan for `steps` steps of `trials_total` trials (default: shape.trials) fused
    `shape.trials` at a time, on devices of kind `device`."""
    figures = get_device(device)
    model = abstract_model(hf_config, shape.dtype)
    params = model.training_params()
    cost = step_cost(model, shape)
    frozen = sum(math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree_util.tree_leaves(model.params))
    chosen = choose_mesh(params, cost, shape, figures, strategy=strategy, max_devices=max_devices)
    data, model_axis, held = chosen or (1, max_devices, weight_bytes_per_device(params, 1, max_devices, strategy))
    devices = data * model_axis
    step_s = max(cost.flops / (devices * figures.flops(shape.dtype) * figures.efficiency),
                 cost.bytes_accessed / (devices * figures.bandwidth))
    groups = math.ceil((trials_total or shape.trials) / shape.trials)
    return Plan(name, model.family, device, model.num_params, frozen, held, devices, f"{data}x{model_axis}",
                cost.flops, step_s, step_s * steps * groups / 3600, chosen is not None, cost.traced)
