"""Data parallelism over the devices of one host: a trial's batch is split along its first axis
across the devices (GPUs of one machine, TPU cores, or CPU devices forced with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`); the frozen weights and the prompt are
replicated, and XLA (GSPMD) reduces the prompt gradient across devices. One device: a no-op.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


class DataParallel(NamedTuple):
    mesh: Mesh

    @property
    def devices(self) -> int:
        return self.mesh.devices.size

    def shard_batch(self, tree: Any) -> Any:
        """Arrays [B, ...] split along B over the devices."""
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec(DATA_AXIS)))

    def replicate(self, tree: Any) -> Any:
        """A full copy on every device (frozen weights, prompt, optimiser state)."""
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))


def data_parallel(batch_size: int) -> DataParallel | None:
    """A data-parallel placement over all local devices, or None when there is one device or
    the batch does not split evenly (then everything stays on the default device)."""
    devices = jax.local_devices()
    if len(devices) < 2 or batch_size % len(devices):
        return None
    return DataParallel(Mesh(np.asarray(devices), (DATA_AXIS,)))
