"""Data parallelism: a batch split over two (forced CPU) devices trains exactly as on one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import json, jax
from softprompt.core.config import TrainConfig
from softprompt.core.train import train
result = train(TrainConfig(task="rte", model="t5-tiny-random", prompt_length=4, batch_size=4, steps=4,
                           eval_every=2, max_eval_examples=8, init="sampled_vocab"), progress=False)
print(json.dumps({"devices": jax.local_device_count(), "losses": [h["loss"] for h in result.history],
                  "prompt": result.prompt.embeddings[:2, :4].tolist()}))
"""


def _run(devices: int) -> dict:
    env = os.environ | {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_devices_give_the_same_loss_as_one():
    one, two = _run(1), _run(2)
    assert one["devices"] == 1 and two["devices"] == 2
    assert len(one["losses"]) == 2
    for a, b in zip(one["losses"], two["losses"]):
        assert abs(a - b) < 1e-5 * max(1.0, abs(a))
    for row_one, row_two in zip(one["prompt"], two["prompt"]):
        assert all(abs(x - y) < 1e-5 for x, y in zip(row_one, row_two))
