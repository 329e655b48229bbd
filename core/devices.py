"""Published figures of the devices the planner (`core/planner.py`) sizes runs for — the one place
they are stated. Peak rates are the vendors' dense (no sparsity) figures; `efficiency` is the
fraction of peak a prompt-tuning step is assumed to reach (an assumption, not a measurement).

Sources: NVIDIA H100 SXM5 and H200 SXM datasheets, NVIDIA A100 80GB SXM datasheet, NVIDIA L4
datasheet, Google Cloud TPU v5e documentation. `cpu` is this kind of development machine: 2
cores x 3 GHz x 32 float32 FLOPs per cycle (AVX2, two FMA units), 24 GiB of memory.
"""

from __future__ import annotations

from typing import NamedTuple


class Device(NamedTuple):
    name: str
    memory_bytes: int           # accelerator memory (HBM / GDDR), or the machine's RAM
    bf16_flops: float           # peak dense bfloat16 matmul FLOP/s
    f32_flops: float            # peak float32 matmul FLOP/s (TF32 tensor cores on NVIDIA)
    bandwidth: float            # memory bandwidth, bytes/s
    efficiency: float = 0.4     # assumed fraction of peak a step reaches

    def flops(self, dtype: str) -> float:
        return self.bf16_flops if dtype == "bfloat16" else self.f32_flops


GB, GIB = 10**9, 2**30
DEVICES: dict[str, Device] = {
    "h100": Device("NVIDIA H100 SXM 80GB", 80 * GB, 989e12, 494e12, 3.35e12),
    "h200": Device("NVIDIA H200 SXM 141GB", 141 * GB, 989e12, 494e12, 4.8e12),
    "a100-80g": Device("NVIDIA A100 SXM 80GB", 80 * GB, 312e12, 156e12, 2.039e12),
    "l4": Device("NVIDIA L4 24GB", 24 * GB, 121e12, 60e12, 0.3e12),
    "tpu-v5e": Device("Google TPU v5e (one chip)", 16 * GB, 197e12, 197e12 / 3, 0.819e12),
    "cpu": Device("CPU, 2 cores (AVX2)", 24 * GIB, 1.92e11, 1.92e11, 20e9, efficiency=0.3),
}


def get_device(name: str) -> Device:
    """A device by name (case-insensitive); an unknown name: ValueError listing the known ones."""
    key = name.lower()
    if key not in DEVICES:
        raise ValueError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    return DEVICES[key]
