"""Data parallelism: a batch split over two (forced CPU) devices trains exactly as on one; a
decoder folder trained on a 2-way model axis (loaded straight onto it) too."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = """
import json, jax
from softprompt.core.config import TrainConfig
from softprompt.core.train import train
result = train(TrainConfig(task="rte", model="t5-tiny-random", prompt_length=4, batch_size=4, steps=4,
                           eval_every=2, max_eval_examples=8, init="sampled_vocab"), progress=False)
print(json.dumps({"devices": jax.local_device_count(), "losses": [h["loss"] for h in result.history],
                  "prompt": result.prompt.embeddings[:2, :4].tolist()}))
"""

# A decoder-only step: the rows share one [<bos>; prompt] prefix (run once, replicated) while the
# rows are split over the devices, so the prompt gradient gathers from both.
GEMMA_SCRIPT = """
import json, jax, jax.numpy as jnp, numpy as np
from softprompt.core.batching import Batch
from softprompt.core.models.gemma3 import Gemma3Config, Gemma3Ops, random_params
from softprompt.core.scoring import prompt_loss
from softprompt.core.sharding import make_placement
config = Gemma3Config(vocab_size=64, d_model=16, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
                      ffn_dim=32, layer_types=("local", "local", "global"), sliding_window=3)
ops = Gemma3Ops(config)
params = ops.training_params(random_params(config, stddev=0.3))
rng = np.random.default_rng(0)
batch = Batch(rng.integers(3, 64, (4, 6)).astype(np.int32), np.arange(6)[None] < np.array([[6], [2], [4], [1]]),
              rng.integers(3, 64, (4, 2)).astype(np.int32), np.ones((4, 2), bool), np.zeros(4, np.int32))
prompt = jnp.asarray(rng.normal(size=(5, 16)), jnp.float32)
placement = make_placement(batch_size=4)
if placement:
    batch, prompt, params = placement.rows(batch), placement.replicate(prompt), placement.weights(params)
loss, grad = jax.jit(jax.value_and_grad(prompt_loss), static_argnums=1)(prompt, ops, params, batch)
print(json.dumps({"devices": jax.local_device_count(), "sharded": placement is not None, "loss": float(loss),
                  "grad": np.asarray(grad).tolist()}))
"""


# `train` on a Hugging Face folder with the weights split over every device (`model_axis`): they
# are loaded straight onto the mesh (load_model(placement=...)), never whole on one device.
FOLDER_SCRIPT = """
import json, sys, jax
from softprompt.core.config import TrainConfig
from softprompt.core.sharding import make_placement, placement_of
from softprompt.core.train import train
placement = make_placement(model_axis=jax.local_device_count(), strategy="tensor")
result = train(TrainConfig(task="rte", model=sys.argv[1], prompt_length=4, batch_size=4, steps=4, eval_every=2,
                           max_eval_examples=8, init="sampled_vocab"), progress=False, placement=placement)
print(json.dumps({"devices": jax.local_device_count(), "sharded": placement is not None,
                  "losses": [h["loss"] for h in result.history], "prompt": result.prompt.embeddings[:2, :4].tolist()}))
"""


def _run(script: str, *device_counts: int, args: tuple[str, ...] = ()) -> list[dict]:
    """`script`'s JSON line with each device count, the processes side by side (compiling is
    single-threaded work: two of them use both cores)."""
    flags = os.environ.get("XLA_FLAGS", "")           # conftest's, then the device count
    running = [subprocess.Popen([sys.executable, "-c", script, *args], text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                env=os.environ | {"JAX_PLATFORMS": "cpu",
                                                  "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}"})
               for devices in device_counts]
    results = []
    for process in running:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_devices_give_the_same_loss_as_one():
    one, two = _run(SCRIPT, 1, 2)
    assert one["devices"] == 1 and two["devices"] == 2
    assert len(one["losses"]) == 2
    for a, b in zip(one["losses"], two["losses"]):
        assert abs(a - b) < 1e-5 * max(1.0, abs(a))
    for row_one, row_two in zip(one["prompt"], two["prompt"]):
        assert all(abs(x - y) < 1e-5 for x, y in zip(row_one, row_two))


def test_a_shared_prompt_prefix_gives_the_same_gradient_on_two_devices():
    one, two = _run(GEMMA_SCRIPT, 1, 2)
    assert not one["sharded"] and two["sharded"] and two["devices"] == 2
    assert abs(one["loss"] - two["loss"]) < 1e-5 * max(1.0, abs(one["loss"]))
    np.testing.assert_allclose(two["grad"], one["grad"], rtol=1e-4, atol=1e-6)
    assert np.abs(one["grad"]).max() > 0


def test_a_folder_split_over_a_model_axis_trains_as_on_one_device(decoder_folder):
    one, two = _run(FOLDER_SCRIPT, 1, 2, args=(str(decoder_folder("llama")),))
    assert not one["sharded"] and two["sharded"] and two["devices"] == 2
    for a, b in zip(one["losses"], two["losses"], strict=True):
        assert abs(a - b) < 1e-5 * max(1.0, abs(a))
    # split matmuls sum in another order; Adafactor's normalised steps carry that to ~1e-4 of the prompt
    np.testing.assert_allclose(two["prompt"], one["prompt"], rtol=1e-3, atol=1e-4)

