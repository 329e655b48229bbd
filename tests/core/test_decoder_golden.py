"""The shared decoder against transformers, family by family (the exactness proof).

For each family a tiny random transformers model (2 layers, hidden 64, random norms and biases,
weights large enough that logits are far from uniform) is saved with `save_pretrained` and loaded
by `load_model`; `target_logits` for soft prompts copied from the embeddings of some tokens must
equal transformers' logits on those tokens, row by row, in a batch padded in its prompts, inputs
and targets. One compile per family.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softprompt.core.models import UnknownModelError, load_model
from softprompt.core.models.decoder_config import DecoderConfig, UnsupportedModelError
from softprompt.core.models.footprint import config_footprint
from softprompt.core.models.hf_loading import MissingTensorError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from tiny_decoders import FAMILIES, LLAMA3_ROPE, SAVED_AS, VOCAB, write_tiny  # noqa: E402 (needs torch)

GREEDY = ("llama3.1", "qwen3", "gemma2")               # families also checked on greedy decoding


@pytest.fixture(scope="module", params=list(FAMILIES))
def tiny(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param.replace(".", "_"))
    return request.param, write_tiny(request.param, folder), load_model(str(folder))


def _pad(rows: list[list[int]], length: int, left: list[bool]) -> tuple[jax.Array, jax.Array]:
    ids, mask = [], []
    for row, on_left in zip(rows, left):
        padding = length - len(row)
        ids.append([0] * padding + row if on_left else row + [0] * padding)
        mask.append([False] * padding + [True] * len(row) if on_left else [True] * len(row) + [False] * padding)
    return jnp.array(ids, jnp.int32), jnp.array(mask)


def test_target_logits_equal_transformers(tiny):
    family, reference, model = tiny
    assert model.family == FAMILIES[family][2].removesuffix("_text")
    rng = np.random.default_rng(0)
    prompt_rows = [list(rng.integers(4, VOCAB, n)) for n in (5, 3, 4)]
    input_rows = [list(rng.integers(4, VOCAB, n)) for n in (4, 6, 2)]    # rows beyond a window of 4
    target_rows = [model.ops.format_target(list(rng.integers(4, VOCAB, n))) for n in (2, 1, 3)]
    prompt_ids, prompt_mask = _pad(prompt_rows, 6, left=[True, False, True])
    input_ids, input_mask = _pad(input_rows, 7, left=[True, False, False])
    target_ids, target_mask = _pad(target_rows, 5, left=[False] * 3)
    ours = jax.jit(model.ops.target_logits)(
        model.params, prompts=model.ops.embed(model.params, prompt_ids), prompt_mask=prompt_mask,
        input_ids=input_ids, input_mask=input_mask, target_ids=target_ids, target_mask=target_mask)
    assert ours.shape == (3, 5, VOCAB) and ours.dtype == jnp.float32
    bos = [2] if model.ops.config.add_bos else []
    assert bos == ([] if family.startswith("qwen") else [2])
    for b in range(3):
        row = bos + prompt_rows[b] + input_rows[b] + target_rows[b]
        with torch.no_grad():
            logits = reference(torch.tensor([row])).logits[0].numpy()
        expected = logits[len(row) - len(target_rows[b]) - 1:len(row) - 1]
        got = np.asarray(ours[b, :len(target_rows[b])])
        assert np.std(expected) > 1.0   # far from uniform
        assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4, family
    if family in GREEDY:
        _assert_greedy_decoding_matches_generate(reference, model)


def test_checkpoint_layouts(tiny):
    """bfloat16 files load as the run's float32; shards are read through their index; the size
    from config.json alone is the loaded one and transformers' own count."""
    family, reference, model = tiny
    folder = Path(model.name)
    files = sorted(path.name for path in folder.glob("*.safetensors"))
    if SAVED_AS.get(family) == "shards":
        assert len(files) > 1 and (folder / "model.safetensors.index.json").exists()
    else:
        assert files == ["model.safetensors"]
    assert model.params["embedding"].dtype == jnp.float32
    assert DecoderConfig.from_dict(json.loads(json.dumps(model.config))) == model.ops.config  # the stored dict
    footprint = config_footprint(folder / "config.json", prompt_length=10)
    assert footprint["frozen_params"] == model.num_params == reference.num_parameters()
    assert footprint["frozen_bytes"]["bfloat16"] == 2 * model.num_params and footprint["family"] == model.family


def test_model_info_from_a_config_alone(tmp_path):
    """`softprompt model info` on a config.json with no weights: Llama 3.1 8B's published size."""
    from typer.testing import CliRunner

    from softprompt.cli import app
    transformers.LlamaConfig(
        vocab_size=128_256, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=131_072,
        rope_parameters={**LLAMA3_ROPE, "original_max_position_embeddings": 8192}).save_pretrained(tmp_path)
    result = CliRunner().invoke(app, ["model", "info", "--model", str(tmp_path / "config.json"),
                                      "--prompt-length", "100"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output.strip().splitlines()[-1])
    assert info["family"] == "llama" and info["frozen_params"] == 8_030_261_248
    assert info["trainable_params"] == 409_600 and info["frozen_bytes"]["bfloat16"] == 16_060_522_496


def _assert_greedy_decoding_matches_generate(reference, model):
    prompt, steps = [2, 17, 300, 45, 9], 8
    expected = reference.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                  max_new_tokens=steps, do_sample=False, pad_token_id=0)[0, len(prompt):]
    buffer = np.zeros((1, len(prompt) + steps), np.int32)
    buffer[0, :len(prompt)] = prompt
    logits = jax.jit(model.ops.logits)
    for step in range(steps):
        end = len(prompt) + step
        scores = logits(model.params, jnp.asarray(buffer), jnp.arange(buffer.shape[1])[None] < end)
        buffer[0, end] = int(jnp.argmax(scores[0, end - 1]))
    assert buffer[0, len(prompt):].tolist() == expected.tolist()


def test_unsupported_and_malformed_folders_are_named(tmp_path):
    folder = tmp_path / "tiny"
    write_tiny("qwen3", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "phi3"}))
    with pytest.raises(UnknownModelError, match="'phi3' is not supported; supported model_type values: gemma2"):
        load_model(str(folder))
    yarn = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10_000.0, "original_max_position_embeddings": 32}
    (folder / "config.json").write_text(json.dumps({**config, "rope_parameters": yarn}))
    with pytest.raises(UnsupportedModelError, match=r"config.json: rope scaling 'yarn'"):
        load_model(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(MissingTensorError, match=r"model.safetensors: tensor model.layers.0.mlp.gate_proj.weight "
                                                 r"has shape \[128, 64\], config.json says \[96, 64\]"):
        load_model(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(UnsupportedModelError, match=r"config.json: not a valid qwen3 config \(.*`num_hidden_layers` "
                                                    r"\(3\) must be equal to the number of `layer_types` \(2\)"):
        load_model(str(folder))
    three_layers = {key: value for key, value in config.items() if key != "layer_types"}
    (folder / "config.json").write_text(json.dumps({**three_layers, "num_hidden_layers": 3}))
    with pytest.raises(MissingTensorError, match="tensor model.layers.2.input_layernorm.weight is missing"):
        load_model(str(folder))


def test_multimodal_gemma3_config_saved_as_differences(tmp_path):
    """Gemma 3 4B's config.json as published: a `text_config` naming only what differs from
    transformers' defaults (no head counts), rope scaling in the transformers-4 spelling."""
    from softprompt.core.models.decoder_config import RopeScaling, config_from_hf
    config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
              "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                              "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                              "sliding_window": 1024},
              "vision_config": {"model_type": "siglip_vision_model"}}
    decoder = config_from_hf(config)
    assert (decoder.family, decoder.num_heads, decoder.num_kv_heads, decoder.head_dim) == ("gemma3", 8, 4, 256)
    assert decoder.layer_types[:6] == ("local",) * 5 + ("global",) and decoder.sliding_window == 1024
    assert decoder.global_rope_scaling == RopeScaling("linear", 8.0) and decoder.local_rope_scaling is None
    assert (decoder.global_rope_base, decoder.local_rope_base) == (1_000_000.0, 10_000.0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with torch.device("meta"):
        language_model = transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**config["text_config"]))
    footprint = config_footprint(tmp_path / "config.json", prompt_length=1)
    assert footprint["frozen_params"] == language_model.num_parameters()


def test_a_completed_config_is_kept_and_a_damaged_copy_is_completed_again(tmp_path, monkeypatch):
    """transformers completes a config once (its import costs every process seconds where torch is
    installed); later reads take the cached copy, and a damaged copy is replaced, never trusted."""
    from softprompt.core.models.decoder_config import config_from_hf, with_defaults
    monkeypatch.setenv("SOFTPROMPT_HOME", str(tmp_path))
    saved = {"model_type": "qwen3", "hidden_size": 64, "num_hidden_layers": 2}   # as save_pretrained writes it
    completed = with_defaults(saved)
    [cached] = (tmp_path / "configs").glob("*.json")
    assert json.loads(cached.read_text()) == completed and completed["num_attention_heads"] == 32
    cached.write_text(json.dumps(completed | {"num_attention_heads": 1}))
    assert with_defaults(saved)["num_attention_heads"] == 1           # what the cache says is read back
    cached.write_text("{damaged")
    assert with_defaults(saved) == completed and json.loads(cached.read_text()) == completed
    assert config_from_hf(saved).num_heads == 32
