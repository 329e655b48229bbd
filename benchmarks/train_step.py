"""Seconds per prompt-tuning step: softprompt (JAX) against Hugging Face PEFT prompt tuning
(PyTorch), same weights (Gemma 3 270M, or another named model with --model), same batches, prompt length, padding and target-only loss.

PEFT runs in two configurations:
- as its documentation shows it: `model(input_ids, attention_mask, labels)` — logits for every
  position are projected onto the 262k vocabulary;
- its fastest: `logits_to_keep` (as an index tensor) projects only the positions that predict
  target tokens.
Both use transformers' Adafactor with the paper's settings (lr 0.3, no parameter scaling).

Each dtype is timed with both frameworks' weights in it: float32 (softprompt's default), and
bfloat16 (softprompt `--dtype bfloat16`: bfloat16 products with float32 accumulation and float32
activations; PEFT: the model cast to bfloat16, as `torch_dtype=torch.bfloat16` loads it).

    .venv/bin/python benchmarks/train_step.py [--dtype bfloat16] [--dtype float32] [--model smollm2-135m]
Last line: one JSON object with softprompt_s_per_step, peft_s_per_step, peft_fast_s_per_step,
ratio and ratio_fast (PEFT time / softprompt time) for the first dtype, and the same figures under
each dtype's name.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable

import jax.numpy as jnp
import numpy as np

from _common import BATCH, PROMPT_LENGTH, emit, interleaved_seconds, sst2_batch
from softprompt.core.batching import Batch
from softprompt.core.models import load_model
from softprompt.core.optim import OptimizerConfig, make_optimizer
from softprompt.core.prompts import SoftPrompt
from softprompt.core.train import _make_step


def softprompt_step(model, arrays) -> Callable[[], None]:
    batch = Batch(*(jnp.asarray(a) for a in arrays), jnp.zeros(BATCH, jnp.int32))
    prompt = jnp.asarray(SoftPrompt.init(model, length=PROMPT_LENGTH, init="sampled_vocab").embeddings)
    config = OptimizerConfig()
    state = {"prompt": prompt, "opt": make_optimizer(config).init(prompt)}
    step = _make_step(model.ops, config.parameter_scaling)
    params = model.ops.training_params(model.params)

    def call():
        state["prompt"], state["opt"], loss = step(state["prompt"], state["opt"], params, batch,
                                                   config.learning_rate)
        loss.block_until_ready()

    return call


def peft_steps(folder: str, arrays, dtype: str, bos: list[int]) -> tuple[Callable[[], None], Callable[[], None]]:
    """(documented, fastest) one step of PEFT prompt tuning on the same batch, weights in `dtype`."""
    import torch
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.optimization import Adafactor

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=getattr(torch, dtype))
    model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=PROMPT_LENGTH,
                                                    prompt_tuning_init=PromptTuningInit.RANDOM))
    optimizer = Adafactor(model.parameters(), lr=0.3, scale_parameter=False, relative_step=False,
                          warmup_init=False, decay_rate=-0.8, weight_decay=1e-5)
    input_ids, input_mask, target_ids, target_mask = arrays
    # Rows: [<bos>] input target, input left-padded so the targets are the last T positions of every row.
    rows, masks = [], []
    for ids, mask, target, tmask in zip(input_ids, input_mask, target_ids, target_mask):
        real = bos + list(ids[mask]) + list(target[tmask])
        pad = input_ids.shape[1] + target_ids.shape[1] + len(bos) - len(real)
        rows.append([0] * pad + real)
        masks.append([0] * pad + [1] * len(real))
    ids = torch.tensor(rows)
    attention = torch.tensor(masks)
    width = target_ids.shape[1]
    labels = torch.full_like(ids, -100)
    labels[:, -width:] = torch.tensor(np.where(target_mask, target_ids, -100))
    # The positions that predict the targets, as an index tensor: an int `logits_to_keep` slices a
    # strided view of the hidden states, which torch's matmul turns into a batched matmul over the
    # broadcast 262k x 640 embedding (0.7 s forward and again backward here); indices gather a
    # contiguous copy and the projection is one plain matmul. This is PEFT's fastest here.
    keep = torch.arange(-(width + 1), 0)

    def documented():
        optimizer.zero_grad()
        model(input_ids=ids, attention_mask=attention, labels=labels).loss.backward()
        optimizer.step()

    def fastest():
        optimizer.zero_grad()
        logits = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, -width:].reshape(-1),
                                                 ignore_index=-100)
        loss.backward()
        optimizer.step()

    return documented, fastest


def main() -> None:
    import torch

    from softprompt.core.paths import model_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", action="append", choices=["bfloat16", "float32"],
                        help="weights' dtype, repeatable (default: bfloat16 and float32)")
    parser.add_argument("--model", default="gemma3-270m", help="a named model (default: gemma3-270m)")
    args = parser.parse_args()
    dtypes = args.dtype or ["bfloat16", "float32"]
    torch.set_num_threads(os.cpu_count() or 1)
    calls, shapes = {}, {}
    for dtype in dtypes:
        model = load_model(args.model, dtype=dtype)
        arrays = sst2_batch(model)
        bos = [model.ops.config.bos_id] if model.ops.config.add_bos else []
        documented, fastest = peft_steps(str(model_cache_dir(args.model)), arrays, dtype, bos)
        calls.update({f"{dtype}/softprompt": softprompt_step(model, arrays), f"{dtype}/peft": documented,
                      f"{dtype}/peft_fast": fastest})
        shapes = {"batch": BATCH, "prompt_length": PROMPT_LENGTH,
                  "tokens_per_row": len(bos) + PROMPT_LENGTH + arrays[0].shape[1] + arrays[2].shape[1]}
    # Timed in alternation, all models loaded: on a shared machine, timing one after the other
    # lets a slow minute decide the ratio.
    seconds = interleaved_seconds(calls, settle_s=1.0)
    figures = {}
    for dtype in dtypes:
        ours, documented, fastest = (seconds[f"{dtype}/{name}"] for name in ("softprompt", "peft", "peft_fast"))
        figures[dtype] = {"softprompt_s_per_step": round(ours, 3), "peft_s_per_step": round(documented, 3),
                          "peft_fast_s_per_step": round(fastest, 3), "ratio": round(documented / ours, 2),
                          "ratio_fast": round(fastest / ours, 2)}
    emit({"model": args.model, **shapes, "dtype": dtypes[0], **figures[dtypes[0]], **figures})


if __name__ == "__main__":
    main()
