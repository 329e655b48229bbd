"""Loading a decoder from a Hugging Face folder: `config.json`, `model.safetensors` or shards
(`model-0000N-of-0000M.safetensors` + `model.safetensors.index.json`), `tokenizer.json`, and
`tokenizer_config.json` where present (its `add_bos_token`).

Tensors are read one at a time from memory-mapped files and cast to the run's dtype (bfloat16,
float16 or float32 in the file), so peak host memory stays near the model's size at that dtype.
Hugging Face stores projections [out, in]; the Flax tree (decoder.py) stores them [in, out...].
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from ..fingerprint import cached_fingerprint, compute_fingerprint
from .base import FrozenModel
from .decoder import Params
from .decoder_config import SUPPORTED, DecoderConfig, config_from_hf
from .decoder_ops import DecoderOps
from .safetensors_host import HostSafetensors

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# where the language model's tensors live: plain, then the multimodal Gemma 3 layouts (v5, v4)
_PREFIXES = ("model.", "model.language_model.", "language_model.model.")


class CorruptModelFileError(ValueError):
    """A model file (cached or in a Hugging Face folder) that cannot be read; the message names it."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}. If it lies in the softprompt cache, delete that folder "
                         "and load again to rebuild it.")
        self.path = Path(path)


class MissingTensorError(CorruptModelFileError):
    """A tensor the config asks for is not in the files, or has another shape."""

    def __init__(self, path: Path | str, problem: str):
        ValueError.__init__(self, f"{path}: {problem} ({SUPPORTED})")
        self.path = Path(path)


# --------------------------------------------------------------------------------------------- tokenizer

# bytes, unused slots, <control> spellings, and the runs of 2+ spaces the Gemma GGUF marks user-defined
_CONTROL_PIECE = re.compile(
    r"<0x[0-9A-Fa-f]{2}>|<unused\d+>|<[A-Za-z_][\w|/-]*>|\[multimodal\]|[\s\u2581]{2,}")


class HFTokenizer:
    """`base.Tokenizer` over a `tokenizers` tokenizer.json; `encode` adds no special tokens, and text
    spelling one (`<bos>`, `<|im_start|>`) is tokenised as the text it is."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, *, bos_id: int = 2, eos_id: int = 1, pad_id: int = 0):
        tokenizer.encode_special_tokens = True   # "<bos>" in text is text: only code adds special tokens
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id

    @classmethod
    def from_file(cls, path: Path | str, **special_ids: int) -> "HFTokenizer":
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
        For the Gemma 3 GGUF's tokenizer these are exactly the tokens of type NORMAL."""
        added = set(self._tokenizer.get_added_tokens_decoder())
        vocab = self._tokenizer.get_vocab(with_added_tokens=False)
        ids = [i for piece, i in vocab.items() if i not in added and not _CONTROL_PIECE.fullmatch(piece)]
        return np.array(sorted(ids), dtype=np.int32)


# --------------------------------------------------------------------------------------------- weights

Put = Callable[[Any, np.ndarray], jax.Array]   # (pytree key path, host array) -> the array where it goes


def params_from_hf(tensor: Callable[[str, tuple[int, ...]], np.ndarray], config: DecoderConfig, dtype: Any,
                   *, prefix: str = "model.", head_name: str = "lm_head.weight", put: Put | None = None) -> Params:
    """The Flax parameter tree (decoder.py) from Hugging Face tensors: `tensor(name, shape)` returns
    the [out, in] array after checking its shape. `prefix` is where the layers live. Tensors are
    read, cast to `dtype` on the host and handed to `put` one at a time (default: the default
    device; `Placement.weight`: split over a mesh as they arrive)."""
    c = config
    d, heads, kv_heads, head_dim, ffn = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.ffn_dim

    def take(name: str, shape: tuple[int, ...], layout: Callable = lambda a: a):
        return lambda: layout(tensor(name, shape))     # read when placed, below

    def projection(name: str, n: int):  # [n * H, E] -> [E, n, H]
        return take(name, (n * head_dim, d), lambda a: a.reshape(n, head_dim, d).transpose(2, 0, 1))

    def norm(name: str, size: int = d):
        return {"scale": take(name, (size,))}

    def block(layer: str) -> dict:
        attn = {"q": projection(layer + "self_attn.q_proj.weight", heads),
                "k": projection(layer + "self_attn.k_proj.weight", kv_heads),
                "v": projection(layer + "self_attn.v_proj.weight", kv_heads),
                "out": take(layer + "self_attn.o_proj.weight", (d, heads * head_dim),
                            lambda a: a.reshape(d, heads, head_dim).transpose(1, 2, 0))}
        if c.qkv_bias:
            for key, n in (("q", heads), ("k", kv_heads), ("v", kv_heads)):
                attn[f"{key}_bias"] = take(f"{layer}self_attn.{key}_proj.bias", (n * head_dim,),
                                           lambda a, n=n: a.reshape(n, head_dim))
        if c.qk_norm:
            attn["query_norm"] = norm(layer + "self_attn.q_norm.weight", head_dim)
            attn["key_norm"] = norm(layer + "self_attn.k_norm.weight", head_dim)
        mlp = {"gate": take(layer + "mlp.gate_proj.weight", (ffn, d), np.transpose),
               "up": take(layer + "mlp.up_proj.weight", (ffn, d), np.transpose),
               "down": take(layer + "mlp.down_proj.weight", (d, ffn), np.transpose)}
        out = {"pre_attention_norm": norm(layer + "input_layernorm.weight"), "attn": attn, "mlp": mlp}
        if c.post_norms:  # Gemma 2/3: four norms per layer
            out.update(post_attention_norm=norm(layer + "post_attention_layernorm.weight"),
                       pre_ffw_norm=norm(layer + "pre_feedforward_layernorm.weight"),
                       post_ffw_norm=norm(layer + "post_feedforward_layernorm.weight"))
        else:              # Llama-style: "post_attention_layernorm" is the norm before the MLP
            out["pre_ffw_norm"] = norm(layer + "post_attention_layernorm.weight")
        return out

    params = {"embedding": take(prefix + "embed_tokens.weight", (c.vocab_size, d))}
    if not c.tied_embedding:
        params["lm_head"] = take(head_name, (c.vocab_size, d))
    params.update({f"blocks_{i}": block(f"{prefix}layers.{i}.") for i in range(c.num_layers)})
    params["final_norm"] = norm(prefix + "norm.weight")
    place = put or (lambda path, array: jnp.asarray(array))

    def read_in_order(node: Any, path: tuple = ()) -> Any:   # the file's order, as built above
        if isinstance(node, dict):
            return {key: read_in_order(value, path + (jax.tree_util.DictKey(key),)) for key, value in node.items()}
        return place(path, np.asarray(node(), dtype))

    return read_in_order(params)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptModelFileError(path, f"not readable JSON ({error})") from error


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files: those `model.safetensors.index.json` lists, else every *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CorruptModelFileError(index, "no weight_map")
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [path.name for path in files if not path.exists()]
        if missing:
            raise CorruptModelFileError(index, f"lists missing shard(s) {', '.join(missing)}")
        return files
    return sorted(folder.glob("*.safetensors"))


def read_params(files: list[Path], config: DecoderConfig, dtype: Any, put: Put | None = None) -> Params:
    """Parameters from one or more safetensors files, one tensor at a time (memory-mapped), each
    handed to `put` (`params_from_hf`)."""
    where: dict[str, Path] = {}
    handles = {}
    for path in files:
        try:
            handles[path] = HostSafetensors(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CorruptModelFileError(path, f"not a readable safetensors file ({error})") from error
        where.update({name: path for name in handles[path].shapes})
    prefix = next((p for p in _PREFIXES if p + "embed_tokens.weight" in where), "model.")
    head_name = "language_model.lm_head.weight" if prefix == "language_model.model." else "lm_head.weight"

    def tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in where:
            raise MissingTensorError(files[0] if len(files) == 1 else files[0].parent,
                                     f"tensor {name} is missing for a {config.family} model")
        handle = handles[where[name]]
        found = handle.shapes[name]
        if found == shape:
            try:
                return handle.tensor(name)
            except (ValueError, KeyError, TypeError) as error:
                raise CorruptModelFileError(where[name], f"tensor {name} cannot be read ({error})") from error
        raise MissingTensorError(where[name], f"tensor {name} has shape {list(found)}, config.json says "
                                 f"{list(shape)} for a {config.family} model")

    return params_from_hf(tensor, config, dtype, prefix=prefix, head_name=head_name, put=put)


def read_config(folder: Path) -> DecoderConfig:
    """config.json (+ tokenizer_config.json's add_bos_token) -> DecoderConfig."""
    add_bos = None
    if (folder / "tokenizer_config.json").exists():
        add_bos = read_json(folder / "tokenizer_config.json").get("add_bos_token")
    return config_from_hf(read_json(folder / "config.json"), source=str(folder / "config.json"),
                          add_bos=None if add_bos is None else bool(add_bos))


def load_hf_directory(folder: Path | str, *, name: str | None = None, dtype: str = "float32",
                      put: Put | None = None) -> FrozenModel:
    """A Hugging Face-format decoder folder (config.json, *.safetensors, tokenizer.json); `put`:
    where each weight goes as it is read (`params_from_hf`)."""
    folder = Path(folder)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    missing = [f for f in ("config.json", "tokenizer.json") if not (folder / f).exists()]
    weights = weight_files(folder) if (folder / "config.json").exists() else []
    missing += [] if weights else ["*.safetensors"]
    if missing:
        raise FileNotFoundError(f"{folder} is not a model folder: missing {', '.join(missing)}")
    architecture = read_config(folder)
    params = read_params(weights, architecture, DTYPES[dtype], put)
    config = {**architecture.to_dict(), "dtype": dtype}
    fingerprint = (cached_fingerprint(config, params, weights[0]) if len(weights) == 1
                   else compute_fingerprint(config, params))
    tokenizer = HFTokenizer.from_file(folder / "tokenizer.json", bos_id=architecture.bos_id,
                                      eos_id=architecture.eos_id, pad_id=architecture.pad_id)
    return FrozenModel(name=name or str(folder), ops=DecoderOps(architecture), params=params,
                       tokenizer=tokenizer, config=config, fingerprint=fingerprint)
