"""Seconds per prompt-gradient step (value-and-gradient of the prompt loss + Adafactor update), one
model beside another: the tiny random models the tests run the loop on (t5-tiny-random, and the
tiny Llama and Qwen3 Hugging Face folders of tests/core/tiny_decoders.py) and the real models
available offline (smollm2-135m, Llama architecture; gemma3-270m). Every model trains the same
SST-2 batch (8 rows, 64 input tokens, prompt length 20; --batch, --input-tokens), in the given dtype; the steps are timed
in interleaved rounds, so a shared machine's slow minutes fall on every model alike.

    .venv/bin/python benchmarks/decoder_step_times.py [--dtype float32] [--repeats 5] [--model NAME ...]
        [--batch 8] [--input-tokens 64]

`--model` may repeat (a built-in name, a folder, a .gguf file, or `tiny-llama` / `tiny-qwen3`:
written into a temporary folder; needs torch and transformers, the test dependencies).
Last line: one JSON object, {model: {"family", "d_model", "layers", "frozen_params", "s_per_step",
"first_step_s"}} plus "dtype", "repeats", "batch" and "input_tokens".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import train_step
from _common import BATCH, INPUT_TOKENS, emit, interleaved_seconds, sst2_batch
from train_step import softprompt_step

DEFAULT_MODELS = ("t5-tiny-random", "tiny-llama", "tiny-qwen3", "smollm2-135m", "gemma3-270m")
TESTS_CORE = Path(__file__).resolve().parent.parent / "tests" / "core"


def model_path(name: str, scratch: Path) -> str:
    """A `tiny-FAMILY` name written as a folder under `scratch` (the loop tests' model); others as given."""
    if not name.startswith("tiny-"):
        return name
    sys.path.insert(0, str(TESTS_CORE))
    from tiny_decoders import write_loop_model

    return str(write_loop_model(name.removeprefix("tiny-"), scratch / name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help=f"[default: {' '.join(DEFAULT_MODELS)}]")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--input-tokens", type=int, default=INPUT_TOKENS)
    args = parser.parse_args()
    from softprompt.core.models import load_model

    train_step.BATCH = args.batch   # the prompt table's rows follow the batch
    figures: dict = {"dtype": args.dtype, "repeats": args.repeats, "batch": args.batch,
                     "input_tokens": args.input_tokens}
    calls = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.model or DEFAULT_MODELS:
            model = load_model(model_path(name, Path(scratch)), dtype=args.dtype)
            call = softprompt_step(model, sst2_batch(model, batch=args.batch, input_tokens=args.input_tokens))
            started = time.perf_counter()
            call()                                   # the first call compiles
            layers = model.config.get("num_layers") or model.config.get("layers")
            figures[name] = {"family": model.family, "d_model": model.d_model, "layers": layers,
                             "frozen_params": model.num_params,
                             "first_step_s": round(time.perf_counter() - started, 2)}
            calls[name] = call
            print(f"{name}: {model.family}, d_model {model.d_model}, first step {figures[name]['first_step_s']} s",
                  flush=True)
        for name, seconds in interleaved_seconds(calls, warmup=1, repeats=args.repeats).items():
            figures[name]["s_per_step"] = round(seconds, 4)
            print(f"{name}: {seconds:.4f} s per step", flush=True)
    emit(figures)


if __name__ == "__main__":
    main()
