"""Run by tests/core/test_shard_meshes.py in a subprocess with 8 forced CPU devices
(XLA_FLAGS must be set before jax starts): `python shard_meshes.py t5|gemma3` computes t5-tiny-random
or a tiny Gemma 3 on one device and on the data x model meshes of 8 devices (and, given a Hugging Face
folder, loads it straight onto a mesh: `shard_meshes.py gemma3 FOLDER`). Prints one JSON object:
placement ("1x1", "4x2/tensor", ...) -> the numbers; "<placement>/bytes" -> the frozen
bytes and the most one device holds. The meshes that shard the weights are computed once each, with
the strategies alternating (compilations for 8 devices are what takes the time); bytes are read for
every mesh and strategy."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from softprompt.core.batching import EncodedPair, make_batch
from softprompt.core.fused import fused_value_and_grad
from softprompt.core.inference import Query, classify_scores
from softprompt.core.models import load_model
from softprompt.core.models.base import FrozenModel
from softprompt.core.models.gemma3 import Gemma3Config, Gemma3Ops, random_params
from softprompt.core.models.hf_loading import HFTokenizer
from softprompt.core.multi_prompt import stack_prompts
from softprompt.core.planner import weight_bytes_per_device
from softprompt.core.scoring import prompt_loss
from softprompt.core.sharding import STRATEGIES, bytes_per_device, make_placement, place_for_training, place_model, tree_bytes

MESHES = ((8, 1), (4, 2), (2, 4), (1, 8))
# the meshes computed, each with one strategy: 8x1 holds whole weights (data parallel only), and
# its step is the 1x1 step split by rows, so it is left out of the costly compilations
COMPUTED = (((4, 2), "tensor"), ((2, 4), "fsdp"), ((1, 8), "tensor"))
GEMMA = Gemma3Config(vocab_size=256, d_model=32, num_layers=2, num_heads=8, num_kv_heads=2, head_dim=8,
                     ffn_dim=64, layer_types=("local", "global"), sliding_window=4)


def tiny_gemma(folder: Path) -> FrozenModel:
    """A random tiny Gemma 3 with a word-level tokenizer (ids are fed directly here)."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, GEMMA.vocab_size)}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    return FrozenModel("tiny-gemma3", Gemma3Ops(GEMMA), random_params(GEMMA, stddev=0.3),
                       HFTokenizer.from_file(folder / "tokenizer.json", bos_id=2, eos_id=1, pad_id=0),
                       {**GEMMA.to_dict(), "dtype": "float32"}, "tiny")


def inputs(model: FrozenModel, seed: int = 0):
    """8 training pairs, a prompt [5, E], a table of 3 prompts of lengths 5, 3, 4 and 6 queries."""
    rng = np.random.default_rng(seed)
    vocab, width = model.tokenizer.vocab_size, model.d_model
    ids = lambda n: [int(i) for i in rng.integers(4, min(vocab, 256), n)]
    pairs = [EncodedPair(model.ops.format_input(ids(3 + i % 5)), model.ops.format_target(ids(1 + i % 3)), False)
             for i in range(8)]
    prompts = [rng.normal(0, 0.5, (length, width)).astype(np.float32) for length in (5, 3, 4)]
    queries = [Query(model.ops.format_input(ids(2 + q % 4)), q % 3) for q in range(6)]
    # T5: multi-token candidates (each behind its query); decoder-only: single tokens (one row
    # per query), the path Gemma 3 takes for SST-2
    labels = [[ids(2), ids(1) + ids(2), ids(3)] if model.family == "t5" else [ids(1), ids(1), ids(1)]] * len(queries)
    return pairs, prompts, queries, labels


def compute(model: FrozenModel, placement, *, fused: bool) -> dict:
    """A training step's loss and prompt gradient, an ensemble's label scores (a table of 3
    prompts: the evaluation path, `classify_scores`) and, with `fused`, two fused trials' steps."""
    pairs, prompts, queries, labels = inputs(model)
    placed, params = place_for_training(model, placement)
    batch = make_batch(pairs, pad_id=model.tokenizer.pad_id)
    prompt = jnp.asarray(prompts[0])
    if placement:
        batch, prompt = placement.rows(batch), placement.replicate(prompt)
    loss, grad = jax.jit(jax.value_and_grad(prompt_loss), static_argnums=1)(prompt, placed.ops, params, batch)
    scores = classify_scores(placed, stack_prompts(prompts), queries, labels)
    result = {"loss": float(loss), "grad": np.asarray(grad).tolist(), "scores": [s.tolist() for s in scores]}
    if fused:
        trials = fused_value_and_grad(placed.ops, params, prompts[:2], [pairs[:4], pairs[4:]],
                                      pad_id=model.tokenizer.pad_id)
        result |= {"fused_loss": [t.loss for t in trials], "fused_grad": [t.grad.tolist() for t in trials]}
    return result


def held_bytes(model: FrozenModel, placement) -> dict:
    """The frozen bytes, and the most any one device holds once placed."""
    held = bytes_per_device(place_model(model, placement).params)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model.params)
    planned = weight_bytes_per_device(abstract, placement.data, placement.model, placement.strategy)
    return {"frozen_bytes": tree_bytes(model.params), "max_device_bytes": max(held.values()), "devices": len(held),
            "planned_bytes": planned}


def placed_while_loading(folder: str) -> dict:
    """A Hugging Face folder loaded straight onto a 2x4 tensor mesh, with host-to-device transfers
    other than explicit placements refused (nothing goes whole to one device): the same arrays,
    shardings and fingerprint as loading it whole and placing it after."""
    placement = make_placement(model_axis=4, strategy="tensor")
    with jax.transfer_guard_host_to_device("disallow"):
        placed = load_model(folder, placement=placement)
    whole = place_model(load_model(folder, cached=False), placement)
    same = jax.tree_util.tree_map(lambda a, b: a.sharding == b.sharding and bool(np.array_equal(a, b)),
                                  placed.params, whole.params)
    return {"same": all(jax.tree_util.tree_leaves(same)), "same_fingerprint": placed.fingerprint == whole.fingerprint,
            "max_device_bytes": max(bytes_per_device(placed.params).values()), "frozen_bytes": tree_bytes(whole.params)}


def main(family: str, decoder_folder: str | None = None) -> None:
    assert jax.local_device_count() == 8, jax.local_device_count()
    with tempfile.TemporaryDirectory() as folder:
        model = load_model("t5-tiny-random") if family == "t5" else tiny_gemma(Path(folder))
        fused = family == "gemma3"   # fused trials share each prompt's prefix: the decoder-only path
        results = {"1x1": compute(model, None, fused=fused)}
        for (data, model_axis), strategy in COMPUTED:
            placement = make_placement(model_axis=model_axis, strategy=strategy)
            assert (placement.data, placement.model) == (data, model_axis)
            results[f"{data}x{model_axis}/{strategy}"] = compute(model, placement, fused=fused and data == 4)
        for data, model_axis in MESHES:
            for strategy in STRATEGIES:
                placement = make_placement(model_axis=model_axis, strategy=strategy)
                results[f"{data}x{model_axis}/{strategy}/bytes"] = held_bytes(model, placement)
    if decoder_folder:
        results["placed while loading"] = placed_while_loading(decoder_folder)
    json.dump(results, sys.stdout)
    print()


if __name__ == "__main__":
    main(*sys.argv[1:])
