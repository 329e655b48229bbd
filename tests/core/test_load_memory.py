"""Peak host memory while loading a Hugging Face folder (issue 30): tensors are read one at a time
from the memory-mapped safetensors file, so the load's peak anonymous memory stays within 1.2x the
parameters' bytes at the target dtype.

The folder (a Llama of many small layers, bfloat16 on disk, no tensor over 2% of the total) is
written here with numpy: the safetensors format is a JSON header and the raw bytes. The load runs in
a fresh process, which first loads a one-layer model of the same shapes, so that one-time costs
(imports: reading config.json imports transformers, hence torch; the XLA CPU client) are paid
before the baseline; a thread then samples RssAnon from /proc/self/status while `load_model` runs.
RssAnon, not VmRSS: the file's memory-mapped pages are page cache the kernel reclaims at will,
counted in RssFile, not in what the load holds.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import tokenizers

SIZES = dict(vocab_size=1024, hidden_size=512, intermediate_size=1536, num_attention_heads=8,
             num_key_value_heads=8, head_dim=64)
LAYERS = 22   # 75.5M parameters: 151 MB on disk, 302 MB as float32


def _bfloat16_bits(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random normal(0, 0.02) values as bfloat16 bit patterns (uint16), truncated from float32."""
    values = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    return (values.view(np.uint32) >> 16).astype(np.uint16)


def write_llama_folder(folder: Path, layers: int) -> int:
    """A Llama-architecture Hugging Face folder with bfloat16 weights; returns the parameter count."""
    d, ffn, kv = SIZES["hidden_size"], SIZES["intermediate_size"], SIZES["num_key_value_heads"] * SIZES["head_dim"]
    shapes = {"model.embed_tokens.weight": (SIZES["vocab_size"], d), "model.norm.weight": (d,)}
    for i in range(layers):
        layer = f"model.layers.{i}."
        shapes.update({layer + "self_attn.q_proj.weight": (d, d), layer + "self_attn.k_proj.weight": (kv, d),
                       layer + "self_attn.v_proj.weight": (kv, d), layer + "self_attn.o_proj.weight": (d, d),
                       layer + "mlp.gate_proj.weight": (ffn, d), layer + "mlp.up_proj.weight": (ffn, d),
                       layer + "mlp.down_proj.weight": (d, ffn), layer + "input_layernorm.weight": (d,),
                       layer + "post_attention_layernorm.weight": (d,)})
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    with open(folder / "model.safetensors", "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        for shape in shapes.values():
            file.write(_bfloat16_bits(rng, shape).tobytes())
    config = {"model_type": "llama", "num_hidden_layers": layers, "rms_norm_eps": 1e-5, "hidden_act": "silu",
              "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, **SIZES}
    (folder / "config.json").write_text(json.dumps(config))
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, SIZES["vocab_size"])}}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    return sum(int(np.prod(shape)) for shape in shapes.values())


MEASURE = """
import gc, json, sys, threading, time
import jax
from softprompt.core.models import load_model

def anonymous() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("RssAnon:"))

warm, big, dtype = sys.argv[1:]
warm_up = load_model(warm, dtype=dtype, cached=False)
del warm_up
gc.collect()
baseline = anonymous()
peak, done = [baseline], threading.Event()

def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anonymous())
        time.sleep(0.002)

sampler = threading.Thread(target=sample)
sampler.start()
model = load_model(big, dtype=dtype, cached=False)
done.set()
sampler.join()
peak[0] = max(peak[0], anonymous())
params = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(model.params))
print(json.dumps({"baseline": baseline, "peak": peak[0], "params_bytes": params}))
"""


def test_peak_memory_of_a_bfloat16_folder_loaded_as_float32_is_near_its_params_bytes(tmp_path):
    dtype = "float32"
    count = write_llama_folder(tmp_path / "big", LAYERS)
    write_llama_folder(tmp_path / "warm", 1)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "warm"), str(tmp_path / "big"), dtype],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["params_bytes"] == count * np.dtype(dtype).itemsize
    increase = measured["peak"] - measured["baseline"]
    assert increase <= 1.2 * measured["params_bytes"], (increase / measured["params_bytes"], measured)
