"""Loading T5 checkpoints in Hugging Face format: `config.json`, `model.safetensors` (or sharded
with its index) and SentencePiece `spiece.model`, into the Flax parameter tree of `t5.py`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm
from safetensors import SafetensorError, safe_open

from ..fingerprint import cached_fingerprint
from .base import FrozenModel
from .t5 import T5Config, T5Ops


class SentencePieceTokenizer:
    """T5's tokenizer: a SentencePiece model (pad 0, eos 1, unk 2, no bos) plus `extra_ids`
    sentinels `<extra_id_0>`.. appended after its pieces, `<extra_id_0>` being the LAST id
    (the Hugging Face T5 convention). Text is always text: `<extra_id_0>`, `</s>` or `<pad>`
    typed in an input encode as their characters (as Hugging Face's `split_special_tokens=True`);
    sentinel ids enter targets only through `sentinel_id`."""

    bos_id = None

    def __init__(self, model_file: str | Path, *, extra_ids: int = 100):
        self._sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.num_pieces = self._sp.get_piece_size()
        self.extra_ids = extra_ids
        self.vocab_size = self.num_pieces + extra_ids
        self.pad_id, self.eos_id = self._sp.pad_id(), self._sp.eos_id()
        if min(self.pad_id, self.eos_id) < 0:
            raise ValueError(f"{model_file}: T5 needs a SentencePiece model with pad and eos pieces")

    def sentinel_id(self, k: int) -> int:
        """The id of `<extra_id_k>`: vocab_size - 1 - k."""
        if not 0 <= k < self.extra_ids:
            raise ValueError(f"sentinel {k} out of range [0, {self.extra_ids})")
        return self.vocab_size - 1 - k

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ordinary pieces; pad, eos, control pieces and sentinels are skipped."""
        return self._sp.decode([int(i) for i in ids
                                if i < self.num_pieces and not self._sp.is_control(int(i))])

    def ordinary_ids(self) -> np.ndarray:
        sp = self._sp
        special = lambda i: sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i)
        return np.array([i for i in range(self.num_pieces) if not special(i)], dtype=np.int32)


class CheckpointError(ValueError):
    """A T5 checkpoint directory lacks a file, or one of its files is truncated or corrupt."""


class HFTensor(NamedTuple):
    """One Hugging Face tensor and where it goes in the Flax param tree."""

    path: tuple[str, ...]      # in the Flax param tree
    name: str                  # in the safetensors file
    shape: tuple[int, ...]     # in the safetensors file
    is_linear: bool            # a torch Linear weight [out, in]: transposed into a kernel [in, out]


def hf_tensors(c: T5Config) -> Iterator[HFTensor]:
    """Every tensor a checkpoint with config `c` must hold."""
    E, I, F = c.d_model, c.num_heads * c.d_kv, c.d_ff
    yield HFTensor(("shared", "embedding"), "shared.weight", (c.vocab_size, E), False)
    if not c.tie_word_embeddings:
        yield HFTensor(("lm_head", "kernel"), "lm_head.weight", (c.vocab_size, E), True)
    mlp = {"wi_0": (F, E), "wi_1": (F, E)} if c.is_gated else {"wi": (F, E)}
    projections = {"q": (I, E), "k": (I, E), "v": (I, E), "o": (E, I)}
    for stack, num_layers in (("encoder", c.num_layers), ("decoder", c.num_decoder_layers)):
        yield HFTensor((stack, "relative_attention_bias", "embedding"),
                       f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                       (c.relative_attention_num_buckets, c.num_heads), False)
        yield HFTensor((stack, "final_norm", "scale"), f"{stack}.final_layer_norm.weight", (E,), False)
        attentions = [("self_attn", "SelfAttention")] + (
            [("cross_attn", "EncDecAttention")] if stack == "decoder" else [])
        sublayers = [*attentions, ("mlp", "DenseReluDense")]
        for i in range(num_layers):
            for j, (ours, theirs) in enumerate(sublayers):
                hf, layer = f"{stack}.block.{i}.layer.{j}", (stack, f"layers_{i}")
                yield HFTensor((*layer, f"{ours}_norm", "scale"), f"{hf}.layer_norm.weight", (E,), False)
                weights = {**mlp, "wo": (E, F)} if ours == "mlp" else projections
                for proj, shape in weights.items():
                    yield HFTensor((*layer, ours, proj, "kernel"), f"{hf}.{theirs}.{proj}.weight",
                                   shape, True)


def _required(path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError(f"T5 checkpoint file missing: {path}")
    return path


def _weight_files(directory: Path) -> tuple[Path, list[Path]]:
    """(the file identifying the weights, the safetensors files to read)."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return single, [single]
    if not index.is_file():
        raise CheckpointError(f"T5 checkpoint file missing: {single} (nor a sharded {index.name})")
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{index} is not a safetensors index: {error}") from error
    return index, [_required(directory / shard) for shard in shards]


def _read_tensors(files: list[Path]) -> dict[str, np.ndarray]:
    tensors = {}
    for file in files:
        try:
            with safe_open(file, framework="numpy") as reader:
                tensors.update({name: reader.get_tensor(name) for name in reader.keys()})
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{file} is truncated or not a safetensors file: {error}") from error
    return tensors


def _param_tree(config: T5Config, tensors: dict[str, np.ndarray], source: Path) -> dict:
    """The Flax param tree, as numpy arrays in their stored dtype."""
    tree: dict = {}
    for path, name, shape, is_linear in hf_tensors(config):
        if name not in tensors or tensors[name].shape != shape:
            found = tensors[name].shape if name in tensors else "missing"
            raise CheckpointError(f"{source}: tensor {name!r} should be {shape}, found {found}")
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = tensors[name].T if is_linear else tensors[name]
    return tree


def load_t5(path: str | Path, *, dtype: str = "float32", name: str | None = None) -> FrozenModel:
    """Loads a Hugging Face-format T5 directory (`config.json`, `model.safetensors` or a sharded
    `model.safetensors.index.json`, `spiece.model`) with its weights cast to `dtype`.

    The fingerprint hashes the config and the weights as stored, so it does not depend on `dtype`.
    """
    directory = Path(path)
    config_file = _required(directory / "config.json")
    try:
        tokenizer = SentencePieceTokenizer(_required(directory / "spiece.model"))
    except (RuntimeError, OSError) as error:  # what sentencepiece raises on a damaged model
        raise CheckpointError(f"{directory / 'spiece.model'} is not a SentencePiece model") from error
    weights_file, files = _weight_files(directory)
    tensors = _read_tensors(files)
    try:
        config = T5Config.from_hf(json.loads(config_file.read_text()),
                                  has_lm_head="lm_head.weight" in tensors)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CheckpointError(f"{config_file} is not a T5 config: {error!r}") from error
    params = _param_tree(config, tensors, weights_file)
    config_dict = {"family": "t5", **dataclasses.asdict(config), "dtype": jnp.dtype(dtype).name}
    dtype = jnp.dtype(dtype).name
    return FrozenModel(
        name=name or str(directory), ops=T5Ops(config, dtype),
        params=jax.tree.map(lambda x: jnp.asarray(x, dtype), params), tokenizer=tokenizer,
        config=config_dict, fingerprint=cached_fingerprint(config_dict, params, weights_file))
