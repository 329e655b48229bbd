"""Tokens per second of gemma3-270m with a soft prompt: a jitted forward and a prompt-gradient
step, batch 8 x (20 prompt + 64 input) tokens, float32, on this machine.

    .venv/bin/python benchmarks/forward.py
Last line: one JSON object of the figures.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from _common import BATCH, INPUT_TOKENS, PROMPT_LENGTH, emit, seconds_per_call, sst2_batch
from softprompt.core.batching import Batch
from softprompt.core.models import load_model
from softprompt.core.prompts import SoftPrompt
from softprompt.core.scoring import prompt_loss


def main() -> None:
    model = load_model("gemma3-270m")
    input_ids, input_mask, target_ids, target_mask = sst2_batch(model)
    batch = Batch(*(jnp.asarray(a) for a in (input_ids, input_mask, target_ids, target_mask)),
                  jnp.zeros(BATCH, jnp.int32))
    prompt = jnp.asarray(SoftPrompt.init(model, length=PROMPT_LENGTH, init="sampled_vocab").embeddings)
    forward = jax.jit(lambda p, params, b: prompt_loss(p, model.ops, params, b))
    gradient = jax.jit(jax.value_and_grad(lambda p, params, b: prompt_loss(p, model.ops, params, b)))
    forward_s = seconds_per_call(lambda: forward(prompt, model.params, batch).block_until_ready())
    step_s = seconds_per_call(lambda: jax.block_until_ready(gradient(prompt, model.params, batch)))
    tokens = BATCH * (1 + PROMPT_LENGTH + INPUT_TOKENS + target_ids.shape[1])
    emit({"model": "gemma3-270m", "batch": BATCH, "tokens_per_row": tokens // BATCH,
          "forward_s": round(forward_s, 3), "forward_tokens_per_s": round(tokens / forward_s, 1),
          "gradient_step_s": round(step_s, 3), "gradient_tokens_per_s": round(tokens / step_s, 1)})


if __name__ == "__main__":
    main()
