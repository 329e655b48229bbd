"""Gemma 3 (decoder-only): a configuration of the shared decoder (decoder.py).

`Gemma3Config()` is Gemma 3 270M (the `DecoderConfig` defaults); `Gemma3Ops` and `Gemma3` are the
decoder's ops and module. The names stay for the code and tests written before the decoder was
shared; the parameter tree and the config dict (so the fingerprint) are unchanged.
"""

from __future__ import annotations

from .decoder import Decoder as Gemma3
from .decoder import Params, random_params
from .decoder_config import DecoderConfig as Gemma3Config
from .decoder_ops import DecoderOps as Gemma3Ops
from .decoder_ops import previous_valid

__all__ = ["Gemma3", "Gemma3Config", "Gemma3Ops", "Params", "previous_valid", "random_params"]
