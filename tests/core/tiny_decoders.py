"""Tiny random transformers models of every decoder family, saved as Hugging Face folders: the
golden tests' reference models (tests/core/test_decoder_golden.py, test_gguf_decoder.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import tokenizers
import torch
import transformers

VOCAB = 512
SIZES = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-6,
             pad_token_id=0, eos_token_id=1, bos_token_id=2)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32, "rope_theta": 10_000.0}
# family name -> (transformers config class, extra config fields, model_type)
FAMILIES = {
    "llama": ("LlamaConfig", dict(tie_word_embeddings=False), "llama"),
    "llama3.1": ("LlamaConfig", dict(tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE), "llama"),
    "mistral": ("MistralConfig", dict(sliding_window=4), "mistral"),
    "qwen2": ("Qwen2Config", dict(), "qwen2"),
    "qwen3": ("Qwen3Config", dict(), "qwen3"),
    "gemma2": ("Gemma2Config", dict(sliding_window=4, query_pre_attn_scalar=24, attn_logit_softcapping=2.0,
                                    final_logit_softcapping=3.0), "gemma2"),
    "gemma3": ("Gemma3TextConfig", dict(
        sliding_window=4, query_pre_attn_scalar=24, layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}), "gemma3_text"),
}


def _tokenizer_file(path: Path) -> None:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, VOCAB)}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def _as_transformers_4(folder: Path) -> None:
    """Rewrite config.json's rope as real Llama 3.1 checkpoints spell it (rope_theta + rope_scaling)."""
    config = json.loads((folder / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    (folder / "config.json").write_text(json.dumps(config))


SAVED_AS = {"mistral": "bfloat16", "qwen2": "shards"}  # how a family's checkpoint is written (else float32)


def write_tiny(family: str, folder: Path, *, stddev: float = 0.25, vocab_size: int = VOCAB, **fields):
    """A random float32 transformers model of `family` saved in `folder` (+ tokenizer.json), in
    bfloat16 (its weights rounded to bfloat16 first, so both sides hold the same numbers) or in
    shards with an index where SAVED_AS says; returns it. `fields` replace config fields."""
    class_name, extra, _ = FAMILIES[family]
    config = getattr(transformers, class_name)(**(SIZES | {"vocab_size": vocab_size} | extra | fields))
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(0.0, stddev) if "norm" not in name else parameter.uniform_(0.5, 1.5)
            if SAVED_AS.get(family) == "bfloat16":
                parameter.copy_(parameter.bfloat16().float())
    if SAVED_AS.get(family) == "bfloat16":
        copy.deepcopy(model).to(torch.bfloat16).save_pretrained(folder)  # a copy: rope tables stay float32
    else:
        model.save_pretrained(folder, max_shard_size="200KB" if SAVED_AS.get(family) == "shards" else "1GB")
    _tokenizer_file(folder / "tokenizer.json")
    if family == "llama3.1":
        _as_transformers_4(folder)
    return model


LOOP_VOCAB = 2048   # as t5-tiny-random's 2,100 pieces: task text tokenises to about as many tokens


def write_loop_model(family: str, folder: Path) -> Path:
    """`write_tiny`'s model with a tokenizer that reads real task text (a 2,048-piece BPE trained on
    t5-tiny-random's corpus, label words included): the model the loop tests (campaign, ensemble,
    serve) point softprompt at as a Hugging Face folder; returns `folder`."""
    from softprompt.core.models.tiny_t5 import CORPUS

    folder.mkdir(parents=True, exist_ok=True)
    write_tiny(family, folder, vocab_size=LOOP_VOCAB)
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    tokenizer.decoder = tokenizers.decoders.Metaspace()
    tokenizer.train([str(CORPUS)], tokenizers.trainers.BpeTrainer(
        vocab_size=LOOP_VOCAB, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"], show_progress=False))
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder
