"""`t5-tiny-random`: a small random T5 1.1 for tests and laptops, built deterministically.

No T5 checkpoint can be downloaded here, so this model is made on first use: a SentencePiece
vocabulary trained on `core/assets/t5_tiny_corpus.txt` with deterministic settings, random weights
drawn with numpy from a seed (independent of the JAX version), both saved in Hugging Face format
(`config.json`, `model.safetensors`, `spiece.model`) and then loaded like any checkpoint with
`load_t5`. The same seed gives byte-identical files, hence the same fingerprint, on every machine.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import sentencepiece as spm
from safetensors.numpy import save as serialize_safetensors

from ..atomic import write_file
from ..paths import model_cache_dir
from .base import FrozenModel
from .t5 import T5Config
from .t5_loading import hf_tensors, load_t5

CORPUS = Path(__file__).resolve().parent.parent / "assets" / "t5_tiny_corpus.txt"
NUM_PIECES = 2000
EXTRA_IDS = 100

HF_CONFIG = {
    "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True,
    "vocab_size": NUM_PIECES + EXTRA_IDS, "d_model": 64, "d_kv": 16, "num_heads": 4, "d_ff": 128,
    "num_layers": 2, "num_decoder_layers": 2, "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128, "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False, "dropout_rate": 0.0,
    "initializer_factor": 1.0, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
}

SPM_SETTINGS = dict(  # deterministic: one thread, whole corpus in file order
    vocab_size=NUM_PIECES, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
    character_coverage=1.0, num_threads=1, shuffle_input_sentence=False, input_sentence_size=0,
    seed_sentencepiece_size=1_000_000, minloglevel=2)

# What a complete build holds (config.json, written last, marks it complete).
FILES = ("spiece.model", "model.safetensors", "config.json")


def train_tiny_sentencepiece(corpus: Path = CORPUS) -> bytes:
    """The serialized SentencePiece model (~1-2 s)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(input=str(corpus), model_writer=model, **SPM_SETTINGS)
    return model.getvalue()


def _initial_std(name: str, c: T5Config) -> float | None:
    """T5's initial std for a Hugging Face tensor (None: a norm scale, all ones). As T5X: embedding
    std 1; projections fan_in**-0.5, the query also / sqrt(d_kv), standing in for the attention
    scaling that T5 leaves out."""
    inner = c.num_heads * c.d_kv
    return {"shared": 1.0, "lm_head": c.d_model ** -0.5, "q": (c.d_model * c.d_kv) ** -0.5,
            "k": c.d_model ** -0.5, "v": c.d_model ** -0.5, "o": inner ** -0.5,
            "relative_attention_bias": c.d_model ** -0.5, "wi": c.d_model ** -0.5,
            "wi_0": c.d_model ** -0.5, "wi_1": c.d_model ** -0.5, "wo": c.d_ff ** -0.5,
            "layer_norm": None, "final_layer_norm": None}[name.split(".")[-2]]


def random_t5_weights(config: T5Config, seed: int) -> dict[str, np.ndarray]:
    """Hugging Face tensor name -> float32 array, drawn in name order from `default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for tensor in sorted(hf_tensors(config), key=lambda tensor: tensor.name):
        std = _initial_std(tensor.name, config)
        values = np.ones(tensor.shape) if std is None else rng.normal(0.0, std, tensor.shape)
        tensors[tensor.name] = values.astype(np.float32)
    return tensors


def _name(seed: int) -> str:
    return "t5-tiny-random" if seed == 0 else f"t5-tiny-random-seed{seed}"


def build_t5_tiny_random(seed: int = 0) -> Path:
    """The Hugging Face-format directory of `t5-tiny-random` (seed 0) or its sibling for another seed,
    built on first use under `model_cache_dir`."""
    directory = model_cache_dir(_name(seed))
    if all((directory / name).is_file() for name in FILES):
        return directory
    weights = random_t5_weights(T5Config.from_hf(HF_CONFIG, has_lm_head=True), seed)
    files = {"spiece.model": train_tiny_sentencepiece(),
             # metadata format "pt" lets transformers read the file as well
             "model.safetensors": serialize_safetensors(weights, metadata={"format": "pt"}),
             "config.json": (json.dumps(HF_CONFIG, indent=2, sort_keys=True) + "\n").encode()}
    for name, data in files.items():   # in this order: config.json present means the build is complete
        write_file(directory / name, lambda path, data=data: path.write_bytes(data))
    return directory


def load_t5_tiny_random(*, dtype: str = "float32", seed: int = 0) -> FrozenModel:
    """`t5-tiny-random` as a FrozenModel (d_model 64, 2 + 2 layers, vocabulary 2,100)."""
    return load_t5(build_t5_tiny_random(seed), dtype=dtype, name=_name(seed))
