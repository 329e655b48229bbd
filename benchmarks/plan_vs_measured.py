"""The planner (`softprompt model plan`) against this machine: plan a step from the model's config
alone, then load the weights and run the same step (`core.fused`, the step the planner traces) on
the same shapes — real SST-2 sentences cut/padded to the planned input length.

    .venv/bin/python benchmarks/plan_vs_measured.py --model gemma3-270m [--device cpu] [--dtype float32]
Last line: one JSON object with planned_bytes, measured_peak_bytes (the process's peak resident
memory above what it held before the weights were loaded; on a GPU: the device's peak bytes in use),
memory_ratio (measured / planned), planned_step_s, measured_step_s, time_ratio (measured / planned),
tokens_per_s (prompt, input and target tokens per second of the measured step).
"""

from __future__ import annotations

import argparse
import resource

import jax
import jax.numpy as jnp
import numpy as np

from _common import emit, seconds_per_call, sst2_batch
from softprompt.core.abstract_models import read_config
from softprompt.core.batching import Batch
from softprompt.core.fused import _call_value_and_grad
from softprompt.core.models import load_model
from softprompt.core.planner import RunShape, plan


def peak_bytes() -> int:
    """The device's peak bytes in use (accelerators), else the process's peak resident bytes."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return int(stats.get("peak_bytes_in_use") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()

    name, config = read_config(args.model)
    before = peak_bytes()
    model = load_model(args.model, dtype=args.dtype)
    arrays = sst2_batch(model, batch=args.batch_size, input_tokens=args.max_length)
    shape = RunShape(args.batch_size, args.prompt_length, args.max_length, arrays[2].shape[1], 1, args.dtype)
    planned = plan(config, shape, args.device, name=name)

    params = model.ops.training_params(model.params)
    batch = Batch(*(jnp.asarray(a) for a in arrays), jnp.zeros(args.batch_size, jnp.int32))
    table = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (1, args.prompt_length, model.d_model)), jnp.float32)
    mask, tokens = jnp.ones((1, args.prompt_length), bool), jnp.asarray([float(arrays[3].sum())])

    def step():
        losses, grads = _call_value_and_grad(model.ops, params, table, mask, batch, tokens)
        grads.block_until_ready()

    measured_s = seconds_per_call(step, warmup=1, repeats=3)
    measured_bytes = peak_bytes() - (before if jax.default_backend() == "cpu" else 0)
    emit({"model": name, "device": args.device, "backend": jax.default_backend(), "dtype": args.dtype,
          "planned_bytes": planned.bytes_per_device, "measured_peak_bytes": measured_bytes,
          "memory_ratio": measured_bytes / planned.bytes_per_device, "planned_step_s": planned.projected_step_s,
          "measured_step_s": measured_s, "time_ratio": measured_s / planned.projected_step_s,
          "step_flops": planned.step_flops,
          "tokens_per_s": args.batch_size * (args.prompt_length + args.max_length + arrays[2].shape[1]) / measured_s})


if __name__ == "__main__":
    main()
