"""A GGUF file (llama.cpp) as Hugging Face data, torch-free: a config.json dict, float32 tensors under
their Hugging Face names, a `tokenizers` tokenizer. Architectures: gemma3, llama (Llama, Mistral,
SmolLM2), qwen2, qwen3; any quantisation the `gguf` package dequantises (Q4/Q5/Q8/F16/...).

What the GGUF stores differently, undone here as transformers' own GGUF loader does:
- Gemma norms are stored as (1 + w); Hugging Face stores w.
- llama.cpp permutes Llama's q and k rows for its interleaved RoPE; the permutation is reversed.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from ..progress import advance_work
from .decoder_config import RopeScaling, UnsupportedModelError, rope_inverse_frequencies

ARCHITECTURES = {"gemma3": "gemma3_text", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
ROPE_FREQS = "rope_freqs.weight"   # llama.cpp's per-frequency RoPE divisors (Llama 3.1+ GGUFs)
GEMMA3_27B_LAYERS = 62   # llama.cpp tells the 27B by its layer count (its attention scale differs)
# Bumped whenever a conversion of the same file would now differ: a GGUF's cache folder carries it,
# so a file converted by an older softprompt is converted again rather than loaded wrong.
CONVERSION_VERSION = 2   # 2: linear rope scaling, the 27B's query_pre_attn_scalar, rope_freqs

# GGUF tensor names -> Hugging Face names ("blk.N.<key>.<kind>" -> "model.layers.N.<value>.<kind>")
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
# Llama-style layers have one norm before the MLP, which Hugging Face calls post_attention_layernorm
_PLAIN_LAYER_NAMES = {**_LAYER_NAMES, "ffn_norm": "post_attention_layernorm"}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}


def metadata(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def architecture(reader, source: Path | str = "GGUF") -> str:
    name = metadata(reader, "general.architecture")
    if name not in ARCHITECTURES:
        raise UnsupportedModelError(f"{source}: GGUF architecture {name!r} is not supported; supported: "
                                    f"{', '.join(sorted(ARCHITECTURES))}")
    return name


def gguf_tokenizer(reader) -> tokenizers.Tokenizer:
    """The GGUF's `tokenizer.ggml.*` fields through transformers' torch-free converter."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer)

    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]  # "ggml.tokens" -> "tokens", ...
    fields = {name: reader.fields[f"tokenizer.{key}"].contents()
              for key, name in renames.items() if f"tokenizer.{key}" in reader.fields}
    tokenizer, _ = convert_gguf_tokenizer(architecture(reader), fields)
    return tokenizer


def gguf_hf_config(reader, source: Path | str = "GGUF") -> dict:
    """A Hugging Face config.json dict from the GGUF metadata (`<arch>.*`, `tokenizer.ggml.*`),
    linear rope scaling included.

    Not stored in a Gemma 3 GGUF, and fixed by size as in llama.cpp: the local rope base (10,000),
    the 5 local : 1 global layer pattern, and query_pre_attn_scalar = head_dim except for the 27B
    (62 layers), where it is hidden_size / heads (168, as its Hugging Face config says).
    """
    arch_name = architecture(reader, source)
    tensor_names = {tensor.name for tensor in reader.tensors}

    def arch(key: str, default: Any = None) -> Any:
        return metadata(reader, f"{arch_name}.{key}", default)

    layers, heads = int(arch("block_count")), int(arch("attention.head_count"))
    d_model = int(arch("embedding_length"))
    head_dim = int(arch("attention.key_length", d_model // heads))
    config = {
        "architectures": [], "model_type": ARCHITECTURES[arch_name],
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_size": d_model, "intermediate_size": int(arch("feed_forward_length")),
        "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": int(arch("attention.head_count_kv", heads)), "head_dim": head_dim,
        "rope_theta": float(arch("rope.freq_base", 10_000.0)),
        "rms_norm_eps": float(np.float32(arch("attention.layer_norm_rms_epsilon"))),
        "max_position_embeddings": int(arch("context_length")),
        "hidden_act": "silu", "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": metadata(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": int(metadata(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": metadata(reader, "tokenizer.ggml.padding_token_id"),
    }
    scaling = arch("rope.scaling.type")
    rope_freqs = next((tensor for tensor in reader.tensors if tensor.name == ROPE_FREQS), None)
    if rope_freqs is not None:       # Llama 3.1+: llama3 scaling stored as its per-frequency divisors
        config["rope_scaling"] = llama3_scaling_from_factors(np.asarray(rope_freqs.data, np.float64).ravel(),
                                                             config["rope_theta"], head_dim, source)
    elif scaling not in (None, "none"):   # Gemma 3 4B+: linear, on the global layers only (as transformers reads it)
        if scaling != "linear":
            raise UnsupportedModelError(f"{source}: GGUF rope scaling {scaling!r} is not supported (linear is)")
        config["rope_scaling"] = {"rope_type": "linear", "factor": float(arch("rope.scaling.factor"))}
    if arch_name == "gemma3":
        config.update({
            "architectures": ["Gemma3ForCausalLM"], "hidden_activation": "gelu_pytorch_tanh",
            "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
            "sliding_window": int(arch("attention.sliding_window")), "rope_local_base_freq": 10_000.0,
            "query_pre_attn_scalar": d_model // heads if layers == GEMMA3_27B_LAYERS else head_dim,
            "final_logit_softcapping": arch("final_logit_softcapping"),
            "attn_logit_softcapping": arch("attn_logit_softcapping"),
            "pad_token_id": int(metadata(reader, "tokenizer.ggml.padding_token_id", 0))})
        del config["hidden_act"]
    return config


def llama3_factors(base: float, head_dim: int, scaling: dict) -> np.ndarray:
    """[head_dim / 2] what llama.cpp's converter stores as `rope_freqs` for a `llama3` rope
    scaling: each frequency's divisor (1: kept, `factor`: scaled, smoothed between)."""
    rope = RopeScaling("llama3", scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"],
                       scaling["original_max_position_embeddings"])
    return (rope_inverse_frequencies(base, head_dim, dtype=np.float64)
            / rope_inverse_frequencies(base, head_dim, rope, dtype=np.float64))


def llama3_scaling_from_factors(factors: np.ndarray, base: float, head_dim: int, source: Path | str) -> dict:
    """The `llama3` rope_scaling whose divisors are `factors` (a GGUF's `rope_freqs`, [head_dim / 2]).

    The divisors are 1 at high frequencies, `factor` at low ones, and 1 / ((1 - s) / factor + s)
    between, with s = (original / wavelength - low) / (high - low) linear in 1 / wavelength: two
    or more smoothed frequencies give its slope and intercept, hence (original, low, high) up to a
    common scale that changes no frequency; low_freq_factor = 1 fixes it (Llama 3.1-3.3's). One
    smoothed frequency gives `original` with Llama's low 1 and high 4. The result is checked by
    recomputing the divisors: anything else is refused in one line."""
    refused = UnsupportedModelError(f"{source}: its rope_freqs are not a llama3 rope scaling this loader can "
                                    "read; load the Hugging Face folder instead")
    factor = float(factors.max())
    if factors.shape != (head_dim // 2,) or factors.min() < 1 - 1e-6 or factor <= 1 + 1e-6:
        raise refused
    inv_freq = rope_inverse_frequencies(base, head_dim, dtype=np.float64)
    between = (factors > 1 + 1e-6) & (factors < factor * (1 - 1e-6))
    smooth = (1 / factors[between] - 1 / factor) / (1 - 1 / factor)
    inverse_wavelength = inv_freq[between] / (2 * math.pi)
    if between.sum() >= 2:
        slope, intercept = np.polyfit(inverse_wavelength, smooth, 1)    # s = slope / wavelength + intercept
        if intercept >= 0:
            raise refused
        original, high = -slope / intercept, 1 - 1 / intercept
    elif between.sum() == 1:
        high = 4.0
        original = float((1 + (high - 1) * smooth[0]) / inverse_wavelength[0])
    else:
        raise refused
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": float(high),
               "original_max_position_embeddings": int(round(original))}
    if not np.allclose(llama3_factors(base, head_dim, scaling), factors, rtol=1e-4):
        raise refused
    return scaling


def tokenizer_config(reader) -> dict:
    """tokenizer_config.json data: whether the tokenizer adds <bos> (where the GGUF says)."""
    add_bos = metadata(reader, "tokenizer.ggml.add_bos_token")
    return {} if add_bos is None else {"add_bos_token": bool(add_bos)}


def hf_tensor_name(gguf_name: str, arch_name: str = "gemma3") -> str:
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    names = _LAYER_NAMES if arch_name == "gemma3" else _PLAIN_LAYER_NAMES
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", gguf_name)
    if match is None or match.group(2) not in names:
        raise UnsupportedModelError(f"unexpected tensor in the {arch_name} GGUF: {gguf_name}")
    return f"model.layers.{match.group(1)}.{names[match.group(2)]}.{match.group(3)}"


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Reverse llama.cpp's q/k row permutation: [heads * H, E] -> the same, Hugging Face order."""
    half = weights.shape[0] // heads // 2
    return weights.reshape(heads, half, 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def gguf_state_dict(reader, config: dict | None = None) -> dict[str, np.ndarray]:
    """Every tensor dequantised to float32 [out, in], under its Hugging Face name; norms as w."""
    from gguf.quants import dequantize

    arch_name = architecture(reader)
    config = config or gguf_hf_config(reader)
    state = {}
    for tensor in reader.tensors:
        advance_work()
        if tensor.name == ROPE_FREQS:     # read into the config's rope_scaling
            continue
        name = hf_tensor_name(tensor.name, arch_name)
        weights = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if arch_name == "gemma3" and name.endswith("norm.weight"):
            weights = weights - 1.0
        if arch_name == "llama" and ".attn_q." in tensor.name:
            weights = _unpermute(weights, config["num_attention_heads"])
        if arch_name == "llama" and ".attn_k." in tensor.name:
            weights = _unpermute(weights, config["num_key_value_heads"])
        state[name] = weights
    return state
