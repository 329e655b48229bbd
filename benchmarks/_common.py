"""Shared pieces of the benchmarks: the real SST-2 batch every benchmark times, and timing."""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Callable

import numpy as np

BATCH, PROMPT_LENGTH, INPUT_TOKENS = 8, 20, 64


def sst2_batch(model, *, batch: int = BATCH, input_tokens: int = INPUT_TOKENS):
    """`batch` real SST-2 training sentences cut/padded to exactly `input_tokens` tokens each
    (longest sentences first, so little padding), with their label word + eos as targets.
    Returns (input_ids [B, L] int32, input_mask [B, L] bool, target_ids [B, T], target_mask [B, T])."""
    from softprompt.core.tasks import get_task

    task = get_task("sst2")
    examples = sorted(task.examples("train", limit=2000), key=lambda e: -len(e.inputs))[:batch]
    inputs = [model.ops.format_input(model.tokenizer.encode(e.inputs))[:input_tokens] for e in examples]
    targets = [model.ops.format_target(model.tokenizer.encode(e.targets)) for e in examples]
    width = max(len(t) for t in targets)
    input_ids = np.zeros((batch, input_tokens), np.int32)
    input_mask = np.zeros((batch, input_tokens), bool)
    target_ids = np.zeros((batch, width), np.int32)
    target_mask = np.zeros((batch, width), bool)
    for row, (ids, target) in enumerate(zip(inputs, targets)):
        input_ids[row, : len(ids)], input_mask[row, : len(ids)] = ids, True
        target_ids[row, : len(target)], target_mask[row, : len(target)] = target, True
    return input_ids, input_mask, target_ids, target_mask


def seconds_per_call(call: Callable[[], object], *, warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of `call()` after `warmup` calls (compilation, caches)."""
    return interleaved_seconds({"call": call}, warmup=warmup, repeats=repeats)["call"]


def interleaved_seconds(calls: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 5,
                        settle_s: float = 0.0) -> dict[str, float]:
    """Median wall time of each call, timed in rounds (one call of each per round), so that a
    shared machine's slow minutes fall on every contestant alike. `settle_s`: a pause before each
    timed call, for the previous runtime's worker threads (OpenMP, XLA) to stop spinning."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            time.sleep(settle_s)
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def emit(figures: dict) -> None:
    """The benchmark's last line: one JSON object."""
    sys.stdout.write(json.dumps(figures, sort_keys=True) + "\n")
