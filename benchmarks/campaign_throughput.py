"""Trial steps per second: K prompt-tuning trials stepping separately (as a campaign's concurrent
trials do today: one forward/backward of the frozen model each) against one fused step
(`core/fused.py`: the K batches through the model once). Gemma 3 270M, SST-2 training sentences,
prompt length 20, batch 8 per trial, different prompts per trial. Each mode runs in its own
process so that its peak memory is its own.

    .venv/bin/python benchmarks/campaign_throughput.py [--k 4] [--dtype bfloat16] [--rows-per-call N|all]
                                                       [--table-size N|k]
    .venv/bin/python benchmarks/campaign_throughput.py --model-only     # the cost model, no timing

Last line: one JSON object with trial_steps_per_s_separate, trial_steps_per_s_fused, ratio,
peak_rss_gb_separate, peak_rss_gb_fused, k, device. `--rows-per-call` (default: the trials' batch
size on a CPU, `all` on an accelerator) is the fused step's call size (see core/fused.py).
`--table-size` (default: what a campaign's step server uses, `fuse.max_trials`, 8) is the number of
prompts in each call's table: a decoder-only model runs every prompt of the table once per call.

`--model-only` prints, for K = 1, 4, 16, 64, XLA's own cost analysis (`compiled.cost_analysis()`)
of K separate steps and of one fused step — FLOPs and bytes accessed — and the step time each
implies on a named accelerator: max(FLOPs / peak FLOP/s, bytes / memory bandwidth) per kernel
launch group plus LAUNCH_S per launched kernel (a stated assumption). A projection, not a
measurement.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from _common import BATCH, PROMPT_LENGTH, emit, interleaved_seconds
from softprompt.core.devices import get_device
from softprompt.search.campaign import Fuse

# Published peaks of the accelerator the projection names (NVIDIA H100 SXM, dense bfloat16).
_H100 = get_device("h100")   # the published figures live in core/devices.py
ACCELERATOR = {"name": f"{_H100.name} (projection)", "flops_per_s": _H100.bf16_flops, "bytes_per_s": _H100.bandwidth}
LAUNCH_S = 5e-6          # assumed cost of launching one kernel (CUDA launch + XLA runtime overhead)


def trial_batches(model, k: int, *, batch: int = BATCH) -> list[list]:
    """K different batches of `batch` real SST-2 training sentences (label word as the target)."""
    from softprompt.core.batching import encode_pair
    from softprompt.core.tasks import get_task

    task = get_task("sst2")
    examples = task.examples("train", limit=k * batch)
    pairs = [encode_pair(model, e.inputs, e.targets, max_input_tokens=task.max_input_tokens,
                         max_target_tokens=task.max_target_tokens) for e in examples]
    return [pairs[i * batch: (i + 1) * batch] for i in range(k)]


def trial_prompts(model, k: int) -> list[np.ndarray]:
    from softprompt.core.prompts import SoftPrompt

    return [SoftPrompt.init(model, length=PROMPT_LENGTH, init="sampled_vocab", seed=s).embeddings for s in range(k)]


def time_mode(mode: str, k: int, dtype: str, rows_per_call: int | None, table_size: int | None) -> dict:
    """Seconds for one step of all K trials in `mode` (separate | fused), and this process's peak RSS."""
    from softprompt.core.batching import make_batch
    from softprompt.core.fused import fused_value_and_grad
    from softprompt.core.models import load_model
    from softprompt.core.scoring import prompt_loss

    model = load_model("gemma3-270m", dtype=dtype)
    params = model.ops.training_params(model.params)
    batches, prompts = trial_batches(model, k), trial_prompts(model, k)
    pad = model.tokenizer.pad_id
    if mode == "separate":
        step = jax.jit(jax.value_and_grad(prompt_loss), static_argnums=1)
        arrays = [make_batch(pairs, pad_id=pad) for pairs in batches]

        def call():
            for prompt, batch in zip(prompts, arrays):
                jax.block_until_ready(step(jnp.asarray(prompt), model.ops, params, batch))
    else:
        def call():
            fused_value_and_grad(model.ops, params, prompts, batches, pad_id=pad, rows_per_call=rows_per_call,
                                 table_size=table_size)
    seconds = interleaved_seconds({mode: call}, warmup=2, repeats=5)[mode]
    return {"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def cost_model(dtype: str, ks: tuple[int, ...] = (1, 4, 16, 64)) -> list[dict]:
    """XLA's cost analysis of K separate steps and one fused step, and the implied accelerator times."""
    from softprompt.core.batching import make_batch
    from softprompt.core.fused import _call_value_and_grad, fused_calls
    from softprompt.core.models import load_model
    from softprompt.core.multi_prompt import stack_prompts
    from softprompt.core.scoring import prompt_loss

    model = load_model("gemma3-270m", dtype=dtype)
    params = model.ops.training_params(model.params)
    pad = model.tokenizer.pad_id
    separate_step = jax.jit(jax.value_and_grad(prompt_loss), static_argnums=1)
    rows = []
    for k in ks:
        batches, prompts = trial_batches(model, k), trial_prompts(model, k)
        one = separate_step.lower(jnp.asarray(prompts[0]), model.ops, params,
                                  make_batch(batches[0], pad_id=pad)).compile()
        table = stack_prompts(prompts)
        tokens = np.array([sum(len(p.target_ids) for p in pairs) for pairs in batches], np.float32)
        fused = _call_value_and_grad.lower(model.ops, params, table.embeddings, table.mask,
                                           fused_calls(batches, pad_id=pad)[0], tokens).compile()   # one call
        figures = {"k": k}
        for name, compiled, times in (("separate", one, k), ("fused", fused, 1)):
            cost = _cost(compiled)
            kernels = compiled.as_text().count(" fusion(") + compiled.as_text().count(" custom-call(")
            flops, bytes_ = cost.get("flops", 0.0) * times, cost.get("bytes accessed", 0.0) * times
            seconds = max(flops / ACCELERATOR["flops_per_s"], bytes_ / ACCELERATOR["bytes_per_s"]) \
                + kernels * times * LAUNCH_S
            figures |= {f"{name}_gflops": flops / 1e9, f"{name}_gbytes": bytes_ / 1e9,
                        f"{name}_kernels": kernels * times, f"{name}_projected_ms": seconds * 1e3}
        figures["projected_ratio"] = figures["separate_projected_ms"] / figures["fused_projected_ms"]
        rows.append(figures)
        print(json.dumps({key: round(v, 3) if isinstance(v, float) else v for key, v in figures.items()}))
    return rows


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    return cost[0] if isinstance(cost, list) else dict(cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--model-only", action="store_true")
    parser.add_argument("--rows-per-call", default=None,
                        help=f"rows per fused call: a number or 'all' (default: {BATCH} on a CPU, all on a GPU)")
    parser.add_argument("--table-size", default=str(Fuse().max_trials),
                        help="prompts in a fused call's table: a number (default: the step server's, fuse.max_trials "
                             "of a campaign file) or 'k' (exactly the K trials')")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64], help="K values of --model-only")
    parser.add_argument("--mode", choices=["separate", "fused"], help=argparse.SUPPRESS)   # one child process
    args = parser.parse_args()
    rows_per_call = args.rows_per_call or ("all" if jax.default_backend() != "cpu" else str(BATCH))
    if args.mode:
        rows = None if rows_per_call == "all" else int(rows_per_call)
        table = None if args.table_size == "k" else int(args.table_size)
        print(json.dumps(time_mode(args.mode, args.k, args.dtype, rows, table)))
        return
    if args.model_only:
        rows = cost_model(args.dtype, tuple(args.ks))
        emit({"accelerator": ACCELERATOR["name"], "launch_s": LAUNCH_S, "rows": rows})
        return
    measured = {}
    for mode in ("separate", "fused"):
        done = subprocess.run([sys.executable, str(Path(__file__)), "--mode", mode, "--k", str(args.k),
                               "--dtype", args.dtype, "--rows-per-call", rows_per_call,
                               "--table-size", args.table_size],
                              capture_output=True, text=True, check=True)
        measured[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    separate = args.k / measured["separate"]["seconds"]
    fused = args.k / measured["fused"]["seconds"]
    emit({"trial_steps_per_s_separate": separate, "trial_steps_per_s_fused": fused, "ratio": fused / separate,
          "peak_rss_gb_separate": measured["separate"]["peak_rss_gb"],
          "peak_rss_gb_fused": measured["fused"]["peak_rss_gb"], "k": args.k,
          "device": jax.devices()[0].device_kind, "dtype": args.dtype, "rows_per_call": rows_per_call,
          "table_size": args.table_size})


if __name__ == "__main__":
    main()
