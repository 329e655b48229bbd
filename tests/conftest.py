"""Shared fixtures. The real Gemma 3 270M is loaded once per session (its converted copy is
cached under $SOFTPROMPT_HOME, ~/.cache/softprompt by default, so only the first run converts)."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_model():
    from softprompt.core.models import load_model

    return load_model("t5-tiny-random")


@pytest.fixture(scope="session")
def gemma_model():
    from softprompt.core.models import load_model

    return load_model("gemma3-270m")
