"""GGUF files of the Llama, Qwen2 and Gemma 3 architectures against transformers: a tiny random
transformers model is written as a GGUF the way llama.cpp's converter (convert_hf_to_gguf.py) lays
it out (its tensor names and metadata keys, Llama's q/k rows permuted for llama.cpp's RoPE, Gemma's
norm weights stored as 1 + w, F32 and Q8_0 tensors), loaded with `load_model(path.gguf)`, and its
logits compared with transformers' model, whose weights are set to the dequantised numbers. (The
real Gemma 3 270M GGUF against transformers' own GGUF loader: benchmarks/gguf_against_transformers.py.)"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softprompt.core.models import load_model
from softprompt.core.models.decoder_config import UnsupportedModelError
from softprompt.core.models.gguf_convert import llama3_factors, llama3_scaling_from_factors

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
from tiny_decoders import LLAMA3_ROPE, VOCAB, write_tiny  # noqa: E402 (needs torch)

_LAYER = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
# Gemma 3's four norms per layer and q/k norms (the rest as _LAYER)
_GEMMA3_LAYER = {**_LAYER, "post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                 "post_feedforward_layernorm": "post_ffw_norm", "self_attn.q_norm": "attn_q_norm",
                 "self_attn.k_norm": "attn_k_norm"}
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def _gguf_name(name: str, arch: str) -> str:
    if name in _TOP:
        return _TOP[name]
    _, _, layer, *module, kind = name.split(".")
    return f"blk.{layer}.{(_GEMMA3_LAYER if arch == 'gemma3' else _LAYER)['.'.join(module)]}.{kind}"


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def write_gguf(reference, arch: str, path: Path, rope_freqs: np.ndarray | None = None) -> None:
    """`reference` as a llama.cpp GGUF; its 2-D weights quantised to Q8_0 and the reference's weights
    replaced by their dequantised values (so both sides hold the same numbers); `rope_freqs`: the
    per-frequency rope divisors llama.cpp's converter writes for a llama3 rope scaling."""
    from gguf.quants import dequantize, quantize

    config = reference.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    if arch == "gemma3":   # the global layers' rope (the local base is fixed in llama.cpp), the window
        rope = config.rope_parameters["full_attention"]
        writer.add_rope_freq_base(rope["rope_theta"])
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_sliding_window(config.sliding_window)
        writer.add_tokenizer_model("llama")   # sentencepiece, as Gemma's GGUFs
        writer.add_token_list(["<pad>", "<eos>", "<bos>", "<unk>", "\u2581", "w", "1", "\u2581w", "\u2581w1"]
                              + [f"x{i}" for i in range(9, VOCAB)])   # merges: rebuilt from the pieces
        writer.add_token_scores([0.0] * VOCAB)
        writer.add_token_types([3, 3, 3, 2] + [1] * (VOCAB - 4))   # 3: control, 2: unknown
        writer.add_unk_token_id(3)
        writer.add_add_space_prefix(False)
    else:
        writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(["<pad>", "<eos>", "<bos>", "w", "1", "w1"] + [f"x{i}" for i in range(6, VOCAB)])
        writer.add_token_types([3, 3, 3] + [1] * (VOCAB - 3))   # 3: control
        writer.add_token_merges(["w 1"])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(arch != "qwen2")
    state = reference.state_dict()
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue   # the embedding's own tensor (state_dict lists tied weights twice)
        weights = tensor.numpy()
        if weights.ndim == 2:
            quantised = quantize(weights, gguf.GGMLQuantizationType.Q8_0)
            weights = dequantize(quantised, gguf.GGMLQuantizationType.Q8_0).astype(np.float32)
            with torch.no_grad():
                tensor.copy_(torch.from_numpy(weights))
        if arch == "llama" and ".q_proj." in name:
            weights = _permute(weights, config.num_attention_heads)
        if arch == "llama" and ".k_proj." in name:
            weights = _permute(weights, config.num_key_value_heads)
        if arch == "gemma3" and name.endswith("norm.weight"):
            weights = weights + np.float32(1.0)   # Gemma's RMS norm scales by (1 + w); llama.cpp stores 1 + w
        if weights.ndim == 2:
            writer.add_tensor(_gguf_name(name, arch), quantize(weights, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(_gguf_name(name, arch), weights)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# What a Gemma 3 GGUF can say: llama.cpp fixes the 5 local : 1 global pattern, the local rope base
# (10,000) and query_pre_attn_scalar = head_dim; the global base and its linear scaling are stored.
GEMMA3_AS_GGUF = dict(
    num_hidden_layers=6, layer_types=["sliding_attention"] * 5 + ["full_attention"], query_pre_attn_scalar=16,
    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}})


# Llama 3.1-3.3 GGUFs store their llama3 rope scaling as `rope_freqs`, one divisor per frequency
# (llama.cpp's converter): with an original context of 64, two of the tiny model's 8 frequencies are
# smoothed; with 32 (LLAMA3_ROPE), one.
LLAMA3_AS_GGUF = {"llama3.1": LLAMA3_ROPE | {"original_max_position_embeddings": 64}, "llama3.1-one": LLAMA3_ROPE}
AS_GGUF = {"gemma3": GEMMA3_AS_GGUF, **{name: dict(rope_parameters=rope) for name, rope in LLAMA3_AS_GGUF.items()}}


def _divisors(reference) -> np.ndarray:
    """What llama.cpp's converter stores as rope_freqs: unscaled over scaled inverse frequencies
    (here transformers' own, so the test does not lean on the loader's formula)."""
    config = reference.config
    unscaled = 1.0 / config.rope_parameters["rope_theta"] ** (np.arange(0, config.head_dim, 2) / config.head_dim)
    return unscaled / reference.model.rotary_emb.inv_freq.double().numpy()


@pytest.mark.parametrize("case", ["llama", "qwen2", "gemma3", "llama3.1", "llama3.1-one"])
def test_gguf_logits_equal_transformers(case, tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_HOME", str(tmp_path / "home"))
    family = "llama" if case.startswith("llama") else case
    reference = write_tiny(family, tmp_path / "hf", **AS_GGUF.get(case, {}))
    write_gguf(reference, family, tmp_path / "tiny.gguf",
               rope_freqs=_divisors(reference) if case in LLAMA3_AS_GGUF else None)
    model = load_model(str(tmp_path / "tiny.gguf"))
    assert model.family == family and model.ops.config.add_bos == (family != "qwen2")
    assert ("lm_head" in model.params) == (not reference.config.tie_word_embeddings)
    if case in LLAMA3_AS_GGUF:
        rope = model.ops.config.global_rope_scaling
        assert (rope.kind, rope.factor, rope.original_max_position) == ("llama3", 8.0, LLAMA3_AS_GGUF[case][
            "original_max_position_embeddings"])
    if family == "gemma3":
        config = model.ops.config
        assert (config.layer_types, config.sliding_window) == (("local",) * 5 + ("global",), 4)
        assert model.tokenizer.encode(" w1 w") == [8, 7] and model.tokenizer.decode([8, 7]) == " w1 w"
    row = [2, *np.random.default_rng(0).integers(4, VOCAB, 11).tolist()]   # 12 tokens: 3 windows
    with torch.no_grad():
        expected = reference(torch.tensor([row])).logits[0].numpy()
    got = np.asarray(jax.jit(model.ops.logits)(model.params, jnp.array([row]), jnp.ones((1, len(row)), bool)))[0]
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-4


def test_other_gguf_architectures_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_HOME", str(tmp_path / "home"))
    writer = gguf.GGUFWriter(str(tmp_path / "phi.gguf"), "phi3")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match=r"phi.gguf: GGUF architecture 'phi3' is not supported; "
                                                    r"supported: gemma3, llama, qwen2, qwen3"):
        load_model(str(tmp_path / "phi.gguf"))


@pytest.mark.parametrize(("layers", "hidden", "heads", "head_dim", "scalar"),
                         [(34, 2560, 8, 256, 256), (62, 5376, 32, 128, 168)])   # Gemma 3 4B, 27B
def test_gemma3_attention_scale_is_llama_cpps(layers, hidden, heads, head_dim, scalar, tmp_path):
    """A Gemma 3 GGUF does not store query_pre_attn_scalar: head_dim, except hidden/heads for the
    27B, as llama.cpp sets it and as the published Hugging Face configs say (256 for 4B, 168 for 27B)."""
    from softprompt.core.models.gguf_convert import gguf_hf_config

    writer = gguf.GGUFWriter(str(tmp_path / "g.gguf"), "gemma3")
    writer.add_block_count(layers)
    writer.add_context_length(131072)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(4 * hidden)
    writer.add_head_count(heads)
    writer.add_head_count_kv(heads // 2)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_sliding_window(1024)
    writer.add_token_list(["<pad>", "<eos>", "<bos>"])
    writer.add_eos_token_id(1)
    writer.add_tensor("token_embd.weight", np.zeros((3, 2), np.float32))   # metadata is what is read
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    config = gguf_hf_config(gguf.GGUFReader(str(tmp_path / "g.gguf")))
    assert (config["head_dim"], config["query_pre_attn_scalar"]) == (head_dim, scalar)


def test_rope_freqs_that_are_no_llama3_scaling_are_refused_in_one_line():
    factors = llama3_factors(500_000.0, 128, LLAMA3_ROPE | {"factor": 8.0, "original_max_position_embeddings": 8192})
    assert llama3_scaling_from_factors(factors, 500_000.0, 128, "x.gguf") == {   # Llama 3.1 8B's, recovered
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": pytest.approx(4.0),
        "original_max_position_embeddings": 8192}
    for bad in (factors[::-1].copy(), np.ones(64), factors[:32], factors * np.linspace(1, 1.1, 64)):
        with pytest.raises(UnsupportedModelError, match=r"^x.gguf: its rope_freqs are not a llama3 rope scaling"):
            llama3_scaling_from_factors(bad, 500_000.0, 128, "x.gguf")

