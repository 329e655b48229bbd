"""Where softprompt keeps what it builds once and reuses: converted models, their fingerprints."""

from __future__ import annotations

import os
from pathlib import Path


def softprompt_home() -> Path:
    """`$SOFTPROMPT_HOME`, else `~/.cache/softprompt`; created on first use."""
    home = Path(os.environ.get("SOFTPROMPT_HOME", Path.home() / ".cache" / "softprompt"))
    home.mkdir(parents=True, exist_ok=True)
    return home


def model_cache_dir(name: str) -> Path:
    """The folder holding one model's converted files (weights, tokenizer, fingerprint)."""
    path = softprompt_home() / "models" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
