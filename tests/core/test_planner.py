"""The planner (core/planner.py) and `softprompt model plan`: sizes from a config alone agree with
the real arrays and with XLA's analysis of the whole model."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest
from typer.testing import CliRunner

from softprompt.cli import app
from softprompt.core.abstract_models import abstract_model
from softprompt.core.models import load_model
from softprompt.core.models.gemma3 import random_params
from softprompt.core.models.decoder_config import config_from_hf
from softprompt.core.planner import RunShape, compiled_cost, plan, step_cost
from softprompt.core.sharding import tree_bytes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
TINY_GEMMA3 = dict(model_type="gemma3_text", vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4,
                   query_pre_attn_scalar=16, rope_theta=1000.0, rope_local_base_freq=100.0,
                   layer_types=["sliding_attention"] * 3 + ["full_attention"])
SMALL = RunShape(batch_size=4, prompt_length=5, max_length=16, target_length=4, trials=2, dtype="float32")


def _shapes(tree):
    return jax.tree_util.tree_map(lambda leaf: (tuple(leaf.shape), str(leaf.dtype)), tree)


def test_planned_t5_bytes_are_the_real_arrays_bytes():
    from softprompt.core.models.tiny_t5 import HF_CONFIG
    real = load_model("t5-tiny-random")
    abstract = abstract_model(HF_CONFIG, "float32")
    assert _shapes(abstract.params) == _shapes(real.params)
    planned = plan(HF_CONFIG, SMALL, "cpu")
    assert (planned.params, planned.frozen_bytes) == (real.num_params, tree_bytes(real.params))
    assert planned.devices_needed == 1 and planned.fits and planned.traced


def test_planned_gemma3_matches_the_arrays_and_the_whole_model_compiled():
    abstract = abstract_model(TINY_GEMMA3, "float32")
    assert _shapes(abstract.params) == _shapes(random_params(config_from_hf(TINY_GEMMA3)))
    extrapolated = step_cost(abstract, SMALL)            # traced at 2 and 3 layers, grown to 4
    whole = compiled_cost(abstract, SMALL)
    assert extrapolated.flops == pytest.approx(whole[0], rel=0.02)
    assert extrapolated.activation_bytes == pytest.approx(whole[2], rel=0.25)


def test_a_model_too_large_for_one_device_is_split_over_the_model_axis():
    config = json.loads((EXAMPLES / "llama-3.1-8b" / "config.json").read_text())
    planned = plan(config, RunShape(batch_size=1, prompt_length=20, max_length=64, target_length=4, dtype="float32"), "l4")
    assert planned.params == pytest.approx(8.03e9, rel=0.01)          # the published size
    assert planned.traced                                             # through the shared decoder
    assert planned.devices_needed >= 2 and planned.mesh.endswith(f"x{planned.devices_needed}")
    assert planned.bytes_per_device <= 0.9 * 24e9 < planned.frozen_bytes // 2 * 2


def test_plan_command_prints_a_table_and_one_json_line(tmp_path):
    done = CliRunner().invoke(app, ["model", "plan", "--model", str(EXAMPLES / "qwen2.5-7b"), "--device", "h100"])
    assert done.exit_code == 0, done.output
    last = json.loads(done.output.strip().splitlines()[-1])
    assert {"params", "bytes_per_device", "devices_needed", "mesh", "step_flops", "projected_step_s",
            "projected_campaign_h"} <= set(last)
    assert last["params"] == pytest.approx(7.62e9, rel=0.01) and last["devices_needed"] >= 1
    bad = CliRunner().invoke(app, ["model", "plan", "--model", "t5-tiny-random", "--device", "tpu-v9"])
    assert bad.exit_code == 2 and "unknown device" in bad.output


def test_built_in_configs_are_what_their_shipped_gguf_says():
    """`model plan` reads built-in models from a table (a GGUF's metadata takes seconds to read):
    the table must agree with the shipped file (SmolLM2's; Gemma 3's file takes far longer to read) and
    give the published sizes."""
    import gguf

    from softprompt.core.abstract_models import BUILTIN_CONFIGS
    from softprompt.core.models.gemma3_loading import NAMED_MODELS
    from softprompt.core.models.gguf_convert import gguf_hf_config

    path = NAMED_MODELS["smollm2-135m"]()
    from_file = gguf_hf_config(gguf.GGUFReader(str(path)), path)
    for key, value in BUILTIN_CONFIGS["smollm2-135m"].items():
        assert from_file.get(key) == (pytest.approx(value, rel=1e-6) if isinstance(value, float) else value), key
    sizes = {name: plan(config, SMALL, "cpu").params for name, config in BUILTIN_CONFIGS.items()}
    assert sizes == {"smollm2-135m": 134_515_008, "gemma3-270m": 268_098_176}


def test_every_built_in_model_has_a_config_and_the_error_names_them(tmp_path):
    from softprompt.core.abstract_models import read_config
    from softprompt.core.models import BUILTIN_MODELS

    assert {name: read_config(name)[1]["model_type"] for name in BUILTIN_MODELS} == {
        "gemma3-270m": "gemma3_text", "smollm2-135m": "llama", "t5-tiny-random": "t5"}
    with pytest.raises(FileNotFoundError, match="not a built-in model " + r"\(" + ", ".join(BUILTIN_MODELS) + r"\)"):
        read_config(str(tmp_path / "missing"))
