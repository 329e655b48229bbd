"""The shared decoder's architecture: one frozen dataclass of sizes and switches, read from a Hugging
Face `config.json` for Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 (docs/models.md).

The open decoder families differ by a dozen switches (norm stored as w or 1 + w, embedding scaled by
sqrt(d_model), pre/post sub-layer norms, q/k norms, q/k/v bias, soft-capping, sliding windows and
their layer pattern, RoPE bases and scaling, tied or separate output head, activation). Each family
has a preset of those switches; `to_dict` writes only the switches that differ from the family's
preset, so the Gemma 3 dict (and with it the fingerprint of cached Gemma 3 models) is the one the
Gemma 3-only code wrote.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
from typing import Any, Mapping, NamedTuple

import numpy as np

from ..atomic import write_file
from ..paths import softprompt_home


class UnsupportedModelError(ValueError):
    """A config.json this decoder cannot run; the message names the file, the problem and the
    supported families."""


class RopeScaling(NamedTuple):
    """RoPE frequency scaling: `linear` (all frequencies / factor, Gemma 3 4B+) or `llama3`
    (Llama 3.1/3.2: long wavelengths / factor, short ones kept, a smooth blend between)."""

    kind: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position: int = 8192


# family -> switches; a field not named here takes the dataclass default (Gemma 3's).
_PLAIN = dict(activation="silu", norm_plus_one=False, embed_scale=False, post_norms=False, qk_norm=False,
              qkv_bias=False, tied_embedding=False, add_bos=True)
FAMILY_SWITCHES: dict[str, dict[str, Any]] = {
    "gemma3": {},
    "gemma2": dict(qk_norm=False),
    "llama": _PLAIN,
    "mistral": _PLAIN,
    "qwen2": {**_PLAIN, "qkv_bias": True, "add_bos": False},
    "qwen3": {**_PLAIN, "qk_norm": True, "add_bos": False},
}
MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2",
               "gemma3_text": "gemma3", "gemma3": "gemma3"}
SUPPORTED = "supported model_type values: " + ", ".join(sorted(MODEL_TYPES))
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """A decoder-only architecture. Defaults are Gemma 3 270M (as read from its GGUF); other
    families come from `config_from_hf` or `DecoderConfig.for_family`."""

    vocab_size: int = 262_144
    d_model: int = 640
    num_layers: int = 18
    num_heads: int = 4                 # query heads
    num_kv_heads: int = 1
    head_dim: int = 256
    ffn_dim: int = 2048
    layer_types: tuple[str, ...] = (("local",) * 5 + ("global",)) * 3  # 5 sliding : 1 global
    sliding_window: int | None = 512   # a local layer's query sees keys at distance < window
    local_rope_base: float = 10_000.0
    global_rope_base: float = 1_000_000.0
    query_pre_attn_scalar: float = 256.0  # attention logits are scaled by its -1/2 power
    rms_norm_eps: float = 1e-6
    final_logit_softcap: float | None = None
    attn_logit_softcap: float | None = None
    bos_id: int = 2
    eos_id: int = 1
    pad_id: int = 0
    # switches: each family's preset is FAMILY_SWITCHES[family]
    family: str = "gemma3"
    activation: str = "gelu_tanh"      # of the gate: "gelu_tanh" or "silu"
    norm_plus_one: bool = True         # norm weights stored as w, applied as (1 + w)
    embed_scale: bool = True           # embeddings multiplied by sqrt(d_model)
    post_norms: bool = True            # norms after attention and feed-forward too (Gemma 2/3)
    qk_norm: bool = True               # per-head RMS norm of queries and keys (Gemma 3, Qwen3)
    qkv_bias: bool = False             # biases on q, k, v (Qwen2)
    tied_embedding: bool = True        # the output projection is the embedding
    add_bos: bool = True               # <bos> in front of the prompt
    global_rope_scaling: RopeScaling | None = None
    local_rope_scaling: RopeScaling | None = None

    def __post_init__(self):
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        for name in ("global_rope_scaling", "local_rope_scaling"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, RopeScaling):
                object.__setattr__(self, name, RopeScaling(**value) if isinstance(value, Mapping)
                                   else RopeScaling(*value))
        if len(self.layer_types) != self.num_layers or set(self.layer_types) - {"local", "global"}:
            raise ValueError(f"layer_types must be {self.num_layers} of 'local'/'global': {self.layer_types}")
        if "local" in self.layer_types and self.sliding_window is None:
            raise ValueError("local layers need a sliding_window")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        if self.family not in FAMILY_SWITCHES or self.activation not in ("gelu_tanh", "silu"):
            raise ValueError(f"unknown family {self.family!r} or activation {self.activation!r}")

    @classmethod
    def for_family(cls, family: str, **fields: Any) -> "DecoderConfig":
        """The family's switches, then `fields` (sizes, and switches that differ)."""
        if family not in FAMILY_SWITCHES:
            raise UnsupportedModelError(f"unknown decoder family {family!r}: {SUPPORTED}")
        return cls(**{"family": family, **FAMILY_SWITCHES[family], **fields})

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "DecoderConfig":
        """From `to_dict()` output; other keys (dtype, ...) are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        fields = {key: value for key, value in config.items() if key in names}
        return cls.for_family(fields.pop("family", "gemma3"), **fields)

    def to_dict(self) -> dict:
        """Plain JSON data: `family`, the sizes, and the switches that differ from its preset."""
        preset = {**_DEFAULTS, **FAMILY_SWITCHES[self.family]}
        data = {"family": self.family}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in preset and value == preset[field.name]:
                continue
            data[field.name] = value._asdict() if isinstance(value, RopeScaling) else value
        data["layer_types"] = list(self.layer_types)
        return data

    def inverse_frequencies(self, is_global: bool) -> np.ndarray:
        """The RoPE inverse frequencies [H/2] float32 of global or local layers."""
        base = self.global_rope_base if is_global else self.local_rope_base
        scaling = self.global_rope_scaling if is_global else self.local_rope_scaling
        return rope_inverse_frequencies(base, self.head_dim, scaling)


def rope_inverse_frequencies(base: float, head_dim: int, scaling: RopeScaling | None = None,
                             dtype: type = np.float32) -> np.ndarray:
    """[head_dim / 2] RoPE inverse frequencies of `base`, `scaling` applied, in `dtype`."""
    inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=dtype) / head_dim)
    return _scaled(inv_freq.astype(dtype), scaling).astype(dtype)


_SWITCH_NAMES = ("family", "activation", "norm_plus_one", "embed_scale", "post_norms", "qk_norm", "qkv_bias",
                 "tied_embedding", "add_bos", "global_rope_scaling", "local_rope_scaling")
_DEFAULTS = {field.name: field.default for field in dataclasses.fields(DecoderConfig)
             if field.name in _SWITCH_NAMES}


def _scaled(inv_freq: np.ndarray, scaling: RopeScaling | None) -> np.ndarray:
    """As transformers' `_compute_linear_scaling_rope_parameters` / `_compute_llama3_parameters`."""
    if scaling is None:
        return inv_freq
    if scaling.kind == "linear":
        return inv_freq / scaling.factor
    low_wavelength = scaling.original_max_position / scaling.low_freq_factor
    high_wavelength = scaling.original_max_position / scaling.high_freq_factor
    wavelength = 2 * math.pi / inv_freq
    scaled = np.where(wavelength > low_wavelength, inv_freq / scaling.factor, inv_freq)
    smooth = ((scaling.original_max_position / wavelength - scaling.low_freq_factor)
              / (scaling.high_freq_factor - scaling.low_freq_factor))
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = ~(wavelength < high_wavelength) & ~(wavelength > low_wavelength)
    return np.where(medium, smoothed, scaled)


# ------------------------------------------------------------------------------ from config.json

def text_config(hf: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's part of a config: `text_config` of multimodal checkpoints (Gemma 3 4B+)."""
    inner = hf.get("text_config")
    if isinstance(inner, Mapping):
        return {"model_type": "gemma3_text", "tie_word_embeddings": hf.get("tie_word_embeddings", True), **inner}
    return hf


def with_defaults(hf: Mapping[str, Any], *, source: str = "config.json") -> Mapping[str, Any]:
    """`hf` completed by transformers' config class for its model_type: checkpoints are saved with
    only the fields that differ from its defaults (Gemma 3 4B's `text_config` names no head count),
    and transformers 4 rope keys come back in transformers 5's `rope_parameters` spelling."""
    if hf.get("model_type") not in MODEL_TYPES:
        raise UnsupportedModelError(f"{source}: model_type {hf.get('model_type')!r} is not a supported decoder; "
                                    f"{SUPPORTED}")
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency; a full config reads
        return hf
    # transformers' config module imports torch where it is installed (seconds per process): a config
    # completed once is kept in the cache, so trial workers and replicas read it back instead
    key = hashlib.sha256(json.dumps([version, hf], sort_keys=True, default=str).encode()).hexdigest()
    cached = softprompt_home() / "configs" / f"{key}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, json.JSONDecodeError):
        pass   # not completed yet, or damaged: complete it again
    from transformers import AutoConfig

    try:
        completed = AutoConfig.for_model(**hf).to_dict()
    except Exception as error:  # transformers' validators raise their own types (huggingface_hub's too)
        raise UnsupportedModelError(f"{source}: not a valid {hf['model_type']} config "
                                    f"({' '.join(str(error).split())})") from error
    try:
        text = json.dumps(completed)
    except TypeError:
        return completed   # a value JSON cannot hold: complete it every time instead
    try:
        cached.parent.mkdir(exist_ok=True)
        write_file(cached, lambda path: path.write_text(text))
    except OSError:
        pass   # a read-only cache: complete it every time instead
    return json.loads(text)   # what a later process reads back, tuples as lists


def config_from_hf(hf: Mapping[str, Any], *, source: str = "config.json",
                   add_bos: bool | None = None) -> DecoderConfig:
    """DecoderConfig from a Hugging Face config dict (completed by `with_defaults`; transformers 4
    flat rope keys or 5's `rope_parameters`). `add_bos`: the tokenizer's own setting where known
    (tokenizer_config.json). Raises UnsupportedModelError naming `source` for anything it cannot run
    exactly."""
    hf = text_config(with_defaults(hf, source=source))
    model_type = hf.get("model_type")
    family = MODEL_TYPES.get(model_type)
    if family is None:
        raise UnsupportedModelError(f"{source}: model_type {model_type!r} is not a supported decoder; {SUPPORTED}")

    def refuse(problem: str):
        raise UnsupportedModelError(f"{source}: {problem} is not supported ({model_type})")

    try:
        heads = int(hf["num_attention_heads"])
        d_model = int(hf["hidden_size"])
        layers = int(hf["num_hidden_layers"])
        fields: dict[str, Any] = dict(
            vocab_size=int(hf["vocab_size"]), d_model=d_model, num_layers=layers, num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or d_model // heads), ffn_dim=int(hf["intermediate_size"]),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)))
    except (KeyError, TypeError, ValueError) as error:
        raise UnsupportedModelError(f"{source}: missing or malformed size field ({error!r})") from error
    activation = hf.get("hidden_activation") or hf.get("hidden_act") or "silu"
    if activation not in _ACTIVATIONS:
        refuse(f"activation {activation!r}")
    if hf.get("mlp_bias") or (family != "qwen2" and hf.get("attention_bias")):
        refuse("an output or MLP bias (attention_bias / mlp_bias)")
    if float(hf.get("partial_rotary_factor", 1.0)) != 1.0:
        refuse("partial_rotary_factor")
    fields["activation"] = _ACTIVATIONS[activation]
    fields["tied_embedding"] = bool(hf.get("tie_word_embeddings", family.startswith("gemma")))
    fields["layer_types"], fields["sliding_window"] = _layer_pattern(hf, family, layers)
    fields.update(_rope_fields(hf, family, refuse))
    fields["query_pre_attn_scalar"] = float(hf.get("query_pre_attn_scalar") or fields["head_dim"])
    fields["final_logit_softcap"] = hf.get("final_logit_softcapping")
    fields["attn_logit_softcap"] = hf.get("attn_logit_softcapping")
    fields.update(_special_ids(hf, family))
    if add_bos is not None:
        fields["add_bos"] = add_bos
    return DecoderConfig.for_family(family, **fields)


def _layer_pattern(hf: Mapping[str, Any], family: str, layers: int) -> tuple[tuple[str, ...], int | None]:
    """(layer_types as local/global, sliding window or None)."""
    window = hf.get("sliding_window")
    kinds = hf.get("layer_types")
    if kinds is None:
        if family == "gemma3":
            pattern = int(hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)))
            kinds = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)]
        elif family == "gemma2":
            kinds = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
        elif family == "mistral":
            kinds = ["full_attention" if window is None else "sliding_attention"] * layers
        elif family in ("qwen2", "qwen3") and hf.get("use_sliding_window") and window is not None:
            start = int(hf.get("max_window_layers", layers))
            kinds = ["sliding_attention" if i >= start else "full_attention" for i in range(layers)]
        else:
            kinds = ["full_attention"] * layers
    types = tuple("local" if kind == "sliding_attention" else "global" for kind in kinds)
    if "local" not in types or window is None:
        return ("global",) * layers, None
    return types, int(window)


def _rope_fields(hf: Mapping[str, Any], family: str, refuse) -> dict[str, Any]:
    """RoPE bases and scalings of global and local layers."""
    parameters = hf.get("rope_parameters") or {}
    nested = any(isinstance(value, Mapping) for value in parameters.values())

    def read(layer_type: str, flat_base: str, default_base: float, flat_scaling: Any):
        entry = parameters.get(layer_type, {}) if nested else parameters
        base = float(entry.get("rope_theta", hf.get(flat_base, default_base)))
        scaling = entry if entry.get("rope_type", entry.get("type", "default")) != "default" else flat_scaling
        return base, _rope_scaling(scaling, refuse)

    flat = hf.get("rope_scaling")
    global_base, global_scaling = read("full_attention", "rope_theta", 10_000.0, flat)
    if family == "gemma3":
        local_base, local_scaling = read("sliding_attention", "rope_local_base_freq", 10_000.0, None)
    else:
        local_base, local_scaling = global_base, global_scaling
    return dict(global_rope_base=global_base, global_rope_scaling=global_scaling,
                local_rope_base=local_base, local_rope_scaling=local_scaling)


def _rope_scaling(scaling: Mapping[str, Any] | None, refuse) -> RopeScaling | None:
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return None
    if kind == "linear":
        return RopeScaling("linear", float(scaling["factor"]))
    if kind == "llama3":
        return RopeScaling("llama3", float(scaling["factor"]), float(scaling["low_freq_factor"]),
                           float(scaling["high_freq_factor"]), int(scaling["original_max_position_embeddings"]))
    refuse(f"rope scaling {kind!r} (linear and llama3 are)")


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) else value


def _special_ids(hf: Mapping[str, Any], family: str) -> dict[str, Any]:
    """bos/eos/pad ids; a missing pad id falls back to eos (padding is always masked)."""
    eos = _first(hf.get("eos_token_id"))
    bos = _first(hf.get("bos_token_id"))
    eos = int(eos if eos is not None else (1 if family.startswith("gemma") else 0))
    pad = _first(hf.get("pad_token_id"))
    fields = dict(eos_id=eos, pad_id=int(pad if pad is not None else (0 if family.startswith("gemma") else eos)))
    if bos is None:
        fields["add_bos"] = False
        fields["bos_id"] = eos
    else:
        fields["bos_id"] = int(bos)
    return fields
