"""A frozen model without its weights, from a Hugging Face `config.json` alone: the parameter tree
as `jax.ShapeDtypeStruct`s, and the family's ops when its step can be traced. What the planner
(`core/planner.py`) sizes runs with.

Families are looked up by the config's `model_type` in `BUILDERS`; a family module adds itself with
`register(model_type, builder)`, builder(hf_config, dtype) -> AbstractModel. T5 and the shared
decoder's families (llama, mistral, qwen2, qwen3, gemma2, gemma3: `core/models/decoder.py`) are
traced (their ops run on abstract shapes); a config the decoder refuses gets an
estimated tree with the same parameter names and no ops — bytes and devices exact, the step's cost
by formula.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class AbstractModel(NamedTuple):
    family: str
    num_layers: int
    d_model: int
    params: Any                   # the stored parameters as ShapeDtypeStructs
    ops: Any = None               # the family's FamilyOps, or None: not traceable (estimated)
    truncate: Callable[[int], "AbstractModel"] | None = None   # the same model with n layers
    config: Mapping[str, Any] = {}   # the architecture fields the estimate formulas read

    @property
    def num_params(self) -> int:
        return int(sum(np.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(self.params)))

    def training_params(self) -> Any:
        """The parameters a training step takes (`FamilyOps.training_params`: plus derived arrays)."""
        return jax.eval_shape(self.ops.training_params, self.params) if self.ops is not None else self.params


BUILDERS: dict[str, Callable[[Mapping[str, Any], str], AbstractModel]] = {}


def register(model_type: str, builder: Callable[[Mapping[str, Any], str], AbstractModel]) -> None:
    BUILDERS[model_type] = builder


def abstract_model(hf: Mapping[str, Any], dtype: str = "bfloat16") -> AbstractModel:
    """The abstract model of a Hugging Face config (a multimodal Gemma 3 config: its text model)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if "text_config" in hf:
        hf = {"model_type": f"{hf.get('model_type', '')}_text", **hf["text_config"]}
    model_type = str(hf.get("model_type", ""))
    if model_type not in BUILDERS:
        raise ValueError(f"model_type {model_type!r} cannot be planned: known {', '.join(sorted(BUILDERS))}")
    return BUILDERS[model_type](hf, dtype)


GEMMA3_270M = {"model_type": "gemma3_text", "vocab_size": 262_144, "hidden_size": 640, "intermediate_size": 2048,
               "num_hidden_layers": 18, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
               "sliding_window": 512, "query_pre_attn_scalar": 256, "rope_theta": 1e6, "rope_local_base_freq": 1e4}
SMOLLM2_135M = {"model_type": "llama", "vocab_size": 49_152, "hidden_size": 576, "intermediate_size": 1536,
                "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
                "rope_theta": 1e5, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "hidden_act": "silu",
                "tie_word_embeddings": True}
# The shipped GGUFs' configs, as `gguf_hf_config` reads them: reading a GGUF's metadata takes seconds.
BUILTIN_CONFIGS = {"gemma3-270m": GEMMA3_270M, "smollm2-135m": SMOLLM2_135M}


def _t5_tiny_random() -> dict:
    from .models.tiny_t5 import HF_CONFIG
    return dict(HF_CONFIG)


# every built-in model name -> its Hugging Face config (the one place `read_config` takes the names from)
BUILTIN_READERS: dict[str, Callable[[], dict]] = {
    **{name: (lambda config=config: dict(config)) for name, config in BUILTIN_CONFIGS.items()},
    "t5-tiny-random": _t5_tiny_random}


def read_config(source: str) -> tuple[str, dict]:
    """(name, Hugging Face config) of a built-in model name, a config.json, or a folder holding one."""
    import json
    from pathlib import Path

    if source in BUILTIN_READERS:
        return source, BUILTIN_READERS[source]()
    path = Path(source)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{source}: not a built-in model ({', '.join(BUILTIN_READERS)}), "
                                "a config.json or a folder holding one")
    try:
        return path.parent.name, json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a JSON config ({error})") from error


def _abstract(tree: Any, dtype: str) -> Any:
    return jax.tree_util.tree_map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, DTYPES[dtype]), tree)


def _t5(hf: Mapping[str, Any], dtype: str) -> AbstractModel:
    from .models.t5 import T5Config, T5Ops
    from .models.t5_loading import hf_tensors

    config = T5Config.from_hf(dict(hf), has_lm_head=hf.get("tie_word_embeddings") is False)

    def build(c: T5Config) -> AbstractModel:
        tree: dict = {}
        for path, _, shape, is_linear in hf_tensors(c):
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = jax.ShapeDtypeStruct(shape[::-1] if is_linear else shape, DTYPES[dtype])
        return AbstractModel("t5", c.num_layers + c.num_decoder_layers, c.d_model, tree, T5Ops(c, dtype),
                             lambda n: build(dataclasses.replace(c, num_layers=n, num_decoder_layers=n)),
                             dataclasses.asdict(c))
    return build(config)


def _decoder(hf: Mapping[str, Any], dtype: str) -> AbstractModel:
    """The shared decoder's families (core/models/decoder.py), traced; a config it refuses is
    estimated (`_decoder_estimate`)."""
    from .models.decoder import Decoder
    from .models.decoder_config import config_from_hf
    from .models.decoder_ops import DecoderOps

    try:
        config = config_from_hf(hf)
    except ValueError:
        return _decoder_estimate(hf, dtype)

    def build(c) -> AbstractModel:
        embeds, mask = jax.ShapeDtypeStruct((1, 1, c.d_model), jnp.float32), jax.ShapeDtypeStruct((1, 1), bool)
        shapes = jax.eval_shape(Decoder(c).init, jax.random.key(0), embeds, mask)["params"]
        truncate = lambda n: build(dataclasses.replace(c, num_layers=n, layer_types=c.layer_types[-n:]))
        return AbstractModel(c.family, c.num_layers, c.d_model, _abstract(shapes, dtype), DecoderOps(c), truncate,
                             dataclasses.asdict(c))
    return build(config)


def _decoder_estimate(hf: Mapping[str, Any], dtype: str) -> AbstractModel:
    """The parameter tree of a Llama-style decoder from its config, with the Gemma 3 names
    (embedding, blocks_{i}/attn/q|k|v|out, blocks_{i}/mlp/gate|up|down, norm scales)."""
    d, layers = int(hf["hidden_size"]), int(hf["num_hidden_layers"])
    heads = int(hf["num_attention_heads"])
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    head_dim = int(hf.get("head_dim") or d // heads)
    ffn, vocab = int(hf["intermediate_size"]), int(hf["vocab_size"])
    model_type = str(hf.get("model_type"))
    bias = bool(hf.get("attention_bias", model_type == "qwen2"))
    gemma = model_type.startswith("gemma")
    leaf = lambda *shape: jax.ShapeDtypeStruct(shape, DTYPES[dtype])
    block = {"attn": {"q": leaf(d, heads, head_dim), "k": leaf(d, kv_heads, head_dim),
                      "v": leaf(d, kv_heads, head_dim), "out": leaf(heads, head_dim, d)},
             "mlp": {"gate": leaf(d, ffn), "up": leaf(d, ffn), "down": leaf(ffn, d)},
             "pre_attention_norm": {"scale": leaf(d)}, "pre_ffw_norm": {"scale": leaf(d)}}
    if bias:
        block["attn"] |= {"q_bias": leaf(heads, head_dim), "k_bias": leaf(kv_heads, head_dim),
                          "v_bias": leaf(kv_heads, head_dim)}
    if gemma:
        block |= {"post_attention_norm": {"scale": leaf(d)}, "post_ffw_norm": {"scale": leaf(d)}}
    if model_type == "qwen3" or gemma:
        block["attn"] |= {"query_norm": {"scale": leaf(head_dim)}, "key_norm": {"scale": leaf(head_dim)}}
    params = {"embedding": leaf(vocab, d), "final_norm": {"scale": leaf(d)},
              **{f"blocks_{i}": block for i in range(layers)}}
    tied = bool(hf.get("tie_word_embeddings", gemma))
    if not tied:
        params["unembedding"] = leaf(d, vocab)   # the separate lm_head
    facts = {"d_model": d, "num_layers": layers, "num_heads": heads, "head_dim": head_dim, "ffn_dim": ffn,
             "vocab_size": vocab, "tied": tied}
    return AbstractModel(model_type, layers, d, params, None, None, facts)


register("t5", _t5)
for _model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text"):
    register(_model_type, _decoder)
