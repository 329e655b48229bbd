"""Shared fixtures. The real Gemma 3 270M is loaded once per session (its converted copy is
cached under $SOFTPROMPT_HOME, ~/.cache/softprompt by default, so only the first run converts)."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One JAX persistent compilation cache for the session, inherited by every command, Ray worker and
# replica the tests start: the same tiny-model functions compile once, not once per process.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="softprompt-tests-jax-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Tests compile many small programs once each, so compiling dominates: LLVM's optimisation level 0
# turns the same XLA programs into less optimised machine code (no change to what they compute, the
# golden tests still compare with transformers), 15% off compile-bound tests. Inherited like the cache.
FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import pytest

@pytest.fixture(scope="session")
def tiny_model():
    from softprompt.core.models import load_model

    return load_model("t5-tiny-random")


@pytest.fixture(scope="session")
def decoder_folder(tmp_path_factory):
    """`decoder_folder("llama")`: a tiny random model of that decoder family (tests/core/tiny_decoders.py)
    as a Hugging Face folder with a tokenizer for real task text, written once per session."""
    sys.path.insert(0, str(Path(__file__).parent / "core"))   # tiny_decoders lives beside the golden tests
    from tiny_decoders import write_loop_model

    folders: dict[str, Path] = {}

    def folder(family: str) -> Path:
        if family not in folders:
            folders[family] = write_loop_model(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return folders[family]

    return folder


@pytest.fixture(scope="session")
def tiny_gemma3(decoder_folder):
    """A tiny random Gemma 3 text model (2 layers: one sliding window of 4, one global) loaded from its
    Hugging Face folder: the real model's code path, for tests of logic rather than of the real weights."""
    from softprompt.core.models import load_model

    return load_model(str(decoder_folder("gemma3")))


@pytest.fixture(scope="session")
def gemma_model():
    from softprompt.core.models import load_model

    return load_model("gemma3-270m")


@pytest.fixture
def postgres_uri():
    """A fresh PostgreSQL database on the local server (dropped afterwards), as an MLflow store URI."""
    psycopg = pytest.importorskip("psycopg")
    name = f"softprompt_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({error})")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()
