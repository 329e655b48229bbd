"""The frozen weights travel once from the driver to every process of a node through Ray's object
store: `share_model` in the driver, `unshare_model` in a trial or step server. On CPU,
`jax.device_put` of the object store's read-only numpy arrays does not copy, so the trials of one
node share one copy of the weights; on an accelerator each device holds its own copy and the host
copy is still shared."""

from __future__ import annotations

import dataclasses

from softprompt.core.models.base import FrozenModel


def share_model(model: FrozenModel) -> FrozenModel:
    """The model with numpy weights, ready for `ray.put` (the object store keeps numpy arrays in
    shared memory and hands each process on the node read-only views of the same pages)."""
    import jax
    import numpy as np

    return dataclasses.replace(model, params=jax.tree_util.tree_map(np.asarray, model.params))


def unshare_model(model: FrozenModel) -> FrozenModel:
    """The model with JAX weights that alias the shared numpy buffers (no copy on CPU)."""
    import jax

    return dataclasses.replace(model, params=jax.device_put(model.params))
