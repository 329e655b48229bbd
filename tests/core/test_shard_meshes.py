"""Sharded frozen weights (core/sharding.py): on meshes 4x2, 2x4 and 1x8 of forced CPU devices,
T5 and Gemma 3 train, score an ensemble and fuse trials exactly as on one device, and each device
holds about 1/model of the frozen bytes. The 8-device work runs in one subprocess
(tests/core/shard_meshes.py): XLA_FLAGS must be set before jax starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, PartitionSpec

from softprompt.core.sharding import Placement, make_placement

SCRIPT = Path(__file__).with_name("shard_meshes.py")
MESHES = ("4x2/tensor", "2x4/fsdp", "1x8/tensor")   # computed (shard_meshes.COMPUTED); bytes: all


@pytest.fixture(scope="module")
def meshes(decoder_folder) -> dict:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"   # after conftest's
    env = os.environ | {"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    # one process per family, side by side: compiling for 8 devices is single-threaded work
    extra = {"t5": [], "gemma3": [str(decoder_folder("llama"))]}    # + a folder loaded straight onto a mesh
    running = {family: subprocess.Popen([sys.executable, str(SCRIPT), family, *extra[family]], env=env, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for family in ("t5", "gemma3")}
    results = {}
    for family, process in running.items():
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]
        results[family] = json.loads(out.strip().splitlines()[-1])
    return results


@pytest.mark.parametrize("family", ["t5", "gemma3"])
def test_shard_training_step_and_ensemble_scores_equal_one_device(meshes, family):
    one = meshes[family]["1x1"]
    assert np.abs(one["grad"]).max() > 0
    for name in MESHES:
        placed = meshes[family][name]
        assert placed["loss"] == pytest.approx(one["loss"], rel=1e-5), name
        np.testing.assert_allclose(placed["grad"], one["grad"], rtol=1e-4, atol=1e-6, err_msg=name)
        for ours, reference in zip(placed["scores"], one["scores"]):
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4, err_msg=name)


def test_shard_fused_trials_equal_one_device(meshes):
    one, placed = meshes["gemma3"]["1x1"], meshes["gemma3"]["4x2/tensor"]
    np.testing.assert_allclose(placed["fused_loss"], one["fused_loss"], rtol=1e-5)
    for ours, reference in zip(placed["fused_grad"], one["fused_grad"]):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["t5", "gemma3"])
def test_shard_each_device_holds_its_share_of_the_frozen_bytes(meshes, family):
    for name, held in meshes[family].items():
        if not name.endswith("/bytes"):
            continue
        model = int(name.split("/")[0].split("x")[1])
        share = held["frozen_bytes"] / model
        assert held["devices"] == 8
        # only vectors (norm scales) and T5's tiny position-bias table stay whole
        assert share <= held["max_device_bytes"] <= 1.1 * share, (name, held)
        assert held["planned_bytes"] == held["max_device_bytes"], name     # the planner's figure


def test_weights_go_onto_the_mesh_as_they_are_read(meshes):
    """`load_model(folder, placement=...)`: each weight is split over the mesh as it is read (the
    replica's and any large model's load), never whole on one device first."""
    loaded = meshes["gemma3"]["placed while loading"]
    assert loaded["same"] and loaded["same_fingerprint"]
    assert loaded["max_device_bytes"] <= 1.1 * loaded["frozen_bytes"] / 4


def test_shard_weight_rules_split_heads_columns_or_the_hidden_dimension():
    fsdp, tensor = (Placement(AbstractMesh((2, 4), ("data", "model")), strategy) for strategy in ("fsdp", "tensor"))
    model = PartitionSpec
    assert tensor.weight_spec("blocks_0/attn/q", (32, 8, 16)) == model(None, "model", None)   # heads
    assert tensor.weight_spec("blocks_0/attn/k", (32, 1, 16)) == model("model", None, None)   # 1 kv head
    assert tensor.weight_spec("blocks_0/attn/out", (8, 16, 32)) == model("model", None, None)
    assert tensor.weight_spec("blocks_0/mlp/gate", (32, 64)) == model(None, "model")          # columns
    assert tensor.weight_spec("blocks_0/mlp/down", (64, 32)) == model("model", None)          # rows
    assert tensor.weight_spec("embedding", (256, 32)) == model("model", None)                  # vocabulary
    assert fsdp.weight_spec("blocks_0/attn/q", (32, 8, 16)) == model("model", None, None)     # hidden
    assert fsdp.weight_spec("decoder/layers_1/self_attn/o/kernel", (64, 32)) == model(None, "model")
    assert fsdp.weight_spec("shared/embedding", (2100, 64)) == model(None, "model")
    assert fsdp.weight_spec("shared/embedding", (2101, 30)) == model()    # nothing divides: replicated
    assert fsdp.weight_spec("final_norm/scale", (32,)) == model()


def test_shard_one_device_is_no_placement():
    one = jax.local_devices()[:1]
    assert make_placement(model_axis=1, devices=one) is None
    with pytest.raises(ValueError, match="model axis"):
        make_placement(model_axis=3, devices=one)
    with pytest.raises(ValueError, match="strategy"):
        Placement(AbstractMesh((1, 2), ("data", "model")), "zero")


def test_shard_settings_come_from_the_environment(monkeypatch):
    from softprompt.core.sharding import default_placement
    monkeypatch.setenv("SOFTPROMPT_MODEL_AXIS", "two")
    with pytest.raises(ValueError, match="SOFTPROMPT_MODEL_AXIS must be a device count"):
        default_placement(8)
    monkeypatch.setenv("SOFTPROMPT_MODEL_AXIS", "1")
    assert (default_placement(8) is None) == (jax.local_device_count() == 1)


def test_shard_settings_model_axis_follows_the_devices_ray_assigned():
    """Two or more whole GPUs: the weights split over every device the process owns, unless an
    explicit setting or SOFTPROMPT_MODEL_AXIS says otherwise; a fraction or one GPU: replicated."""
    from softprompt.core.sharding import model_axis_for
    none: dict[str, str] = {}
    assert model_axis_for(8, gpus=8, environ=none) == 8
    assert model_axis_for(2, gpus=2.0, environ=none) == 2
    assert model_axis_for(1, gpus=1, environ=none) == 1
    assert model_axis_for(1, gpus=0.5, environ=none) == 1
    assert model_axis_for(4, gpus=2.5, environ=none) == 1        # not a whole number of GPUs
    assert model_axis_for(8, gpus=0, environ=none) == 1          # CPU: devices are not GPUs asked for
    assert model_axis_for(8, gpus=8, model_axis=4, environ=none) == 4
    assert model_axis_for(8, gpus=8, environ={"SOFTPROMPT_MODEL_AXIS": "2"}) == 2
    assert model_axis_for(8, gpus=8, model_axis=4, environ={"SOFTPROMPT_MODEL_AXIS": "2"}) == 4
    with pytest.raises(ValueError, match="SOFTPROMPT_MODEL_AXIS must be a device count"):
        model_axis_for(8, gpus=8, environ={"SOFTPROMPT_MODEL_AXIS": "all"})
