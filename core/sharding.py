"""Where arrays live: a two-axis device mesh (`data`, `model`) over the devices of one host.

The frozen weights are split along `model` (each device holds about 1/model of them), a batch's
rows along `data`, and the prompt (a few hundred kilobytes) is replicated; XLA (GSPMD) inserts the
collectives, so every placement computes the same numbers as one device. Prompt tuning has no
optimiser state for the weights, so nothing else needs sharding. One device: a no-op.

How a weight is split is chosen by its parameter path (the family's names, see `core/models`),
with one of two strategies (`Placement.strategy`):

- `fsdp`   — along the hidden (d_model) dimension of every matrix, as fully sharded data
             parallelism stores weights;
- `tensor` — Megatron-style tensor parallelism: attention heads and MLP columns (q/k/v, gate/up)
             split by output, the output projections (out/o, down/wo) by input, the embedding
             by vocabulary.

Each rule lists axes in order of preference: the first one whose size the model axis divides is
split; none divides: the weight stays replicated. Vectors (norm scales) are always replicated.

The placement travels with the weights: `place_model` puts a model's weights on a mesh, and
`shard_rows` reads that mesh back from them to put a batch's rows along `data` — so training,
evaluation, fused trials and serving place batches the same way without passing a mesh around.

Settings (`default_placement`, the model axis chosen by `model_axis_for`): an explicit model axis
(a campaign's `sharding: {model_axis}`, `softprompt train --model-axis`), else
`SOFTPROMPT_MODEL_AXIS`, else every local device when the process asked Ray for two or more whole
GPUs (`SOFTPROMPT_GPUS`, or `gpus=`: a trial's `resources.gpu`, a step server's, a replica's
`devices`), else 1 (replicated); and `SOFTPROMPT_SHARDING` (`fsdp` or `tensor`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"
STRATEGIES = ("fsdp", "tensor")
ENV_MODEL_AXIS = "SOFTPROMPT_MODEL_AXIS"
ENV_STRATEGY = "SOFTPROMPT_SHARDING"
ENV_GPUS = "SOFTPROMPT_GPUS"            # the GPUs this process asked Ray for (set by whoever asked)

# (path pattern, fsdp axes, tensor axes): the axes each strategy prefers to split, in order.
# Paths are "/"-joined parameter names (Gemma 3 / shared decoder, then T5's Flax names).
RULES: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    (r"(^|/)(embedding|shared/embedding|lm_head)$", (1, 0), (0, 1)),       # [V, E]
    (r"(^|/)(unembedding|lm_head/kernel)$", (0, 1), (1, 0)),               # [E, V]
    (r"attn/(q|k|v)$", (0,), (1, 0)),                                      # [E, N|K, H]
    (r"attn/(q|k|v)/kernel$", (0,), (1,)),                                 # [E, N*H]
    (r"attn/(out|o)$", (2,), (0, 2)),                                      # [N, H, E]
    (r"attn/(out|o)/kernel$", (1,), (0,)),                                 # [N*H, E]
    (r"mlp/(gate|up|wi|wi_0|wi_1)(/kernel)?$", (0,), (1,)),                # [E, F]
    (r"mlp/(down|wo)(/kernel)?$", (1,), (0,)),                             # [F, E]
    (r"relative_attention_bias/embedding$", (), ()),                       # [buckets, H]: tiny
)


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh of `data` x `model` devices and how the weights are split over `model`."""

    mesh: Mesh
    strategy: str = "fsdp"

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"sharding strategy must be one of {STRATEGIES}, got {self.strategy!r}")

    @property
    def data(self) -> int:
        return self.mesh.shape[DATA_AXIS]

    @property
    def model(self) -> int:
        return self.mesh.shape[MODEL_AXIS]

    def weight_spec(self, path: str, shape: Sequence[int]) -> PartitionSpec:
        """The PartitionSpec of the frozen weight at `path` ("blocks_0/attn/q") of `shape`."""
        if len(shape) < 2 or self.model == 1:
            return PartitionSpec()
        axes = _preferred_axes(path, shape, self.strategy)
        split = next((axis for axis in axes if shape[axis] % self.model == 0), None)
        if split is None:
            return PartitionSpec()
        return PartitionSpec(*(MODEL_AXIS if axis == split else None for axis in range(len(shape))))

    def weights(self, params: Any) -> Any:
        """The frozen weights placed on the mesh, each split as `weight_spec` says."""
        return jax.tree_util.tree_map_with_path(self.weight, params)

    def weight(self, path: Any, leaf: Any) -> jax.Array:
        """One frozen weight (at pytree key `path`) put on the mesh: each device receives only its
        part, so a loader that places weight by weight never holds the whole model on one device."""
        return jax.device_put(leaf, NamedSharding(self.mesh, self.weight_spec(path_name(path), np.shape(leaf))))

    def rows(self, tree: Any) -> Any:
        """Arrays [B, ...] split along B over `data` (replicated where B does not divide)."""
        def put(leaf):
            divides = np.ndim(leaf) >= 1 and np.shape(leaf)[0] % self.data == 0
            return jax.device_put(leaf, NamedSharding(self.mesh, PartitionSpec(DATA_AXIS if divides else None)))
        return jax.tree_util.tree_map(put, tree)

    def replicate(self, tree: Any) -> Any:
        """A full copy on every device (the prompt, its optimiser state)."""
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))


def path_name(path: Sequence[Any]) -> str:
    """A tree path as "/"-joined names: (DictKey('blocks_0'), DictKey('attn')) -> "blocks_0/attn"."""
    return "/".join(str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key)))) for key in path)


def _preferred_axes(path: str, shape: Sequence[int], strategy: str) -> tuple[int, ...]:
    """The axes `strategy` would split at `path`, in order; an unknown matrix: its largest axis first."""
    for pattern, fsdp, tensor in RULES:
        if re.search(pattern, path):
            axes = fsdp if strategy == "fsdp" else tensor
            return tuple(axis for axis in axes if axis < len(shape))
    return tuple(sorted(range(len(shape)), key=lambda axis: -shape[axis]))


def make_placement(*, model_axis: int = 1, strategy: str = "fsdp", batch_size: int | None = None,
                   devices: Sequence[jax.Device] | None = None) -> Placement | None:
    """A `data` x `model_axis` placement over `devices` (default: all local devices), or None when
    that is one device. The data axis is the largest divisor of devices / model_axis that also
    divides `batch_size` (when given), so a batch always splits evenly; spare devices stay idle."""
    devices = list(devices if devices is not None else jax.local_devices())
    if model_axis < 1 or len(devices) % model_axis:
        raise ValueError(f"the model axis ({model_axis}) must divide the {len(devices)} devices")
    data = len(devices) // model_axis
    if batch_size:
        data = max(d for d in range(1, data + 1) if data % d == 0 and batch_size % d == 0)
    if data * model_axis == 1:
        return None
    grid = np.asarray(devices[: data * model_axis], dtype=object).reshape(data, model_axis)
    return Placement(Mesh(grid, (DATA_AXIS, MODEL_AXIS)), strategy)


def _count_setting(name: str, value: str) -> int | None:
    """A device count from a setting's text ("" or unset: None); anything else: one line."""
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"{name} must be a device count, got {value!r}")
    return int(value)


def _gpus_setting(value: str) -> float:
    try:
        return float(value or 0)
    except ValueError:
        raise ValueError(f"{ENV_GPUS} must be a number of GPUs, got {value!r}") from None


def model_axis_for(devices: int, *, gpus: float = 0, model_axis: int | None = None,
                   environ: Mapping[str, str] | None = None) -> int:
    """The model axis of a process that owns `devices` local devices (those Ray assigned it) and
    asked for `gpus`: `model_axis` when given, else `SOFTPROMPT_MODEL_AXIS` in `environ` (default
    os.environ), else all `devices` when `gpus` is a whole number of at least 2, else 1."""
    environ = os.environ if environ is None else environ
    if model_axis is None:
        model_axis = _count_setting(ENV_MODEL_AXIS, environ.get(ENV_MODEL_AXIS, ""))
    if model_axis is None:
        model_axis = devices if gpus >= 2 and float(gpus).is_integer() else 1
    if model_axis < 1:
        raise ValueError(f"the model axis must be at least 1, got {model_axis}")
    return model_axis


def default_placement(batch_size: int | None = None, *, model_axis: int | None = None,
                      strategy: str | None = None, gpus: float | None = None) -> Placement | None:
    """`make_placement` over all local devices with the model axis `model_axis_for` chooses
    (`gpus` default: `SOFTPROMPT_GPUS`, else 0) and the strategy from the argument, else
    `SOFTPROMPT_SHARDING` (default fsdp)."""
    gpus = _gpus_setting(os.environ.get(ENV_GPUS, "")) if gpus is None else gpus
    model_axis = model_axis_for(jax.local_device_count(), gpus=gpus, model_axis=model_axis)
    strategy = strategy or os.environ.get(ENV_STRATEGY, "") or "fsdp"
    return make_placement(model_axis=model_axis, strategy=strategy, batch_size=batch_size)


def place_model(model, placement: Placement | None):
    """The FrozenModel with its weights on `placement`'s mesh (None: unchanged)."""
    if placement is None:
        return model
    return dataclasses.replace(model, params=placement.weights(model.params))


def place_for_training(model, placement: Placement | None):
    """(the placed model, its training weights `ops.training_params` placed too): the derived arrays
    (Gemma 3's transposed embedding) are split by their own rules."""
    model = place_model(model, placement)
    params = model.ops.training_params(model.params)
    return model, placement.weights(params) if placement else params


def placement_of(params: Any) -> Placement | None:
    """The placement the weights were put on (`Placement.weights`), or None if they are not on a
    data x model mesh. The strategy is not recorded in the arrays and reads as fsdp."""
    for leaf in jax.tree_util.tree_leaves(params):
        sharding = getattr(leaf, "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        if isinstance(sharding, NamedSharding) and mesh.axis_names == (DATA_AXIS, MODEL_AXIS):
            return Placement(mesh)
        return None
    return None


def shard_rows(params: Any, tree: Any) -> Any:
    """A batch's arrays [B, ...] split along `data` of the mesh `params` live on (unchanged when
    the weights are not placed, or the mesh has one data row)."""
    placement = placement_of(params)
    return tree if placement is None or placement.data == 1 else placement.rows(tree)


def bytes_per_device(tree: Any) -> dict[str, int]:
    """Bytes each device holds of `tree`'s arrays (read from their addressable shards)."""
    held: dict[str, int] = {}
    for leaf in jax.tree_util.tree_leaves(tree):
        for shard in leaf.addressable_shards:
            held[str(shard.device)] = held.get(str(shard.device), 0) + shard.data.nbytes
    return held


def tree_bytes(tree: Any) -> int:
    """Bytes of `tree`'s arrays, counted once (not per device)."""
    return sum(math.prod(np.shape(leaf)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree_util.tree_leaves(tree))
