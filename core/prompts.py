"""The `SoftPrompt`: a learned [prompt_length, d_model] matrix and the facts that travel with it.

On disk a prompt is two files, never pickle:
- `prompt.safetensors`: one float32 tensor named "prompt", shape [P, E];
- `prompt.json`: model fingerprint, task, init, length, hyperparameters, step, metrics, and the
  sha256 of the safetensors file (so a damaged or swapped file is caught on load).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from . import prompt_init
from .atomic import recover_folder, replace_folder, staging_folder
from .fingerprint import file_sha256
from .models.base import FrozenModel

TENSOR_FILE = "prompt.safetensors"
META_FILE = "prompt.json"
FORMAT = "softprompt.prompt/v1"


class PromptArtifactError(ValueError):
    """A prompt artifact is missing, truncated, corrupt or inconsistent."""


class FingerprintMismatchError(PromptArtifactError):
    """A prompt was asked to load onto a model other than the one it was trained on."""


@dataclasses.dataclass(frozen=True)
class SoftPrompt:
    """A soft prompt and its provenance.

    Attributes:
      embeddings: [length, d_model] float32.
      model_fingerprint: the fingerprint of the frozen model it belongs to.
      task, initializer: what it was trained for and how it started.
      hyperparameters, step, metrics: the training facts recorded with the best prompt.
    """

    embeddings: np.ndarray
    model_fingerprint: str
    task: str | None = None
    initializer: str = "random_uniform"   # how it started (`init` in prompt.json)
    hyperparameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    step: int = 0
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.embeddings.shape[0])

    @classmethod
    def init(cls, model: FrozenModel, *, length: int, init: str = "random_uniform", seed: int = 0,
             task: str | None = None, label_words: tuple[str, ...] | None = None,
             text: str | None = None, path: str | os.PathLike | None = None) -> "SoftPrompt":
        """A new prompt for `model`.

        Example:
          >>> prompt = SoftPrompt.init(model, length=20, init="class_labels", seed=0,  # doctest: +SKIP
          ...                          label_words=("negative", "positive"))
          >>> prompt.embeddings.shape                                                  # doctest: +SKIP
          (20, 640)
        """
        if length < 1:
            raise prompt_init.PromptInitError(f"prompt length must be >= 1, got {length}")
        key = jax.random.key(seed)
        if init == "random_uniform":
            table = prompt_init.random_uniform(key, length=length, d_model=model.d_model)
        elif init == "sampled_vocab":
            table = prompt_init.sampled_vocab(key, model, length=length)
        elif init == "class_labels":
            table = prompt_init.class_labels(key, model, length=length, label_words=label_words or ())
        elif init == "from_text":
            table = prompt_init.from_text(key, model, length=length, text=text or "")
        elif init == "from_file":
            if path is None:
                raise prompt_init.PromptInitError("from_file initialisation needs a prompt path")
            source = cls.load(path, model=model).embeddings
            if source.shape[0] < length:
                raise prompt_init.PromptInitError(f"{path}: the prompt has {source.shape[0]} positions, fewer "
                                                  f"than the {length} asked for")
            table = source[:length]
        else:
            raise prompt_init.PromptInitError(
                f"unknown prompt init {init!r}; choose one of {', '.join(prompt_init.INITIALISERS)}")
        return cls(np.asarray(table, dtype=np.float32), model.fingerprint, task=task, initializer=init)

    def replace(self, **changes: Any) -> "SoftPrompt":
        return dataclasses.replace(self, **changes)

    def metadata(self) -> dict[str, Any]:
        return {"format": FORMAT, "model_fingerprint": self.model_fingerprint, "task": self.task,
                "init": self.initializer, "length": self.length, "d_model": int(self.embeddings.shape[1]),
                "hyperparameters": dict(self.hyperparameters), "step": int(self.step),
                "metrics": {k: float(v) for k, v in self.metrics.items()}}

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes `prompt.safetensors` and `prompt.json` as one folder `directory`: a crash leaves
        the previous artifact or the new one, never a tensor and metadata that disagree."""
        directory = Path(directory)
        staging = staging_folder(directory)
        save_file({"prompt": np.ascontiguousarray(self.embeddings, dtype=np.float32)}, str(staging / TENSOR_FILE))
        meta = self.metadata() | {"sha256": file_sha256(staging / TENSOR_FILE)}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        return replace_folder(staging, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, model: FrozenModel | None = None) -> "SoftPrompt":
        """Reads a prompt artifact; with `model`, refuses one trained on another model."""
        directory = Path(directory)
        recover_folder(directory)
        meta = read_metadata(directory)
        tensor_path = directory / TENSOR_FILE
        if not tensor_path.exists():
            raise PromptArtifactError(f"{tensor_path}: missing prompt tensor file")
        if file_sha256(tensor_path) != meta.get("sha256"):
            raise PromptArtifactError(f"{tensor_path}: sha256 differs from {META_FILE} (corrupt or replaced)")
        try:
            table = load_file(str(tensor_path))["prompt"]
        except (SafetensorError, KeyError, OSError) as error:
            raise PromptArtifactError(f"{tensor_path}: unreadable prompt tensor ({error})") from error
        if table.shape != (meta["length"], meta["d_model"]) or table.dtype != np.float32:
            raise PromptArtifactError(f"{tensor_path}: tensor {table.dtype}{list(table.shape)} does not "
                                      f"match {META_FILE} (float32[{meta['length']}, {meta['d_model']}])")
        if model is not None:
            check_fingerprint(meta["model_fingerprint"], model, source=directory)
        return cls(table, meta["model_fingerprint"], task=meta.get("task"), initializer=meta.get("init", ""),
                   hyperparameters=meta.get("hyperparameters", {}), step=meta.get("step", 0),
                   metrics=meta.get("metrics", {}))


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed `prompt.json` of an artifact directory, checked for the required keys."""
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise PromptArtifactError(f"{path}: missing prompt metadata file") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PromptArtifactError(f"{path}: not valid JSON ({error})") from error
    required = ("format", "model_fingerprint", "length", "d_model", "sha256")
    missing = [key for key in required if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise PromptArtifactError(f"{path}: missing field(s) {', '.join(missing)}")
    if meta["format"] != FORMAT:
        raise PromptArtifactError(f"{path}: unknown format {meta['format']!r} (expected {FORMAT!r})")
    return meta


def check_fingerprint(fingerprint: str, model: FrozenModel, *, source: Any) -> None:
    """Raises FingerprintMismatchError unless `fingerprint` is `model`'s."""
    if fingerprint != model.fingerprint:
        raise FingerprintMismatchError(
            f"{source}: prompt was trained on a model with fingerprint {fingerprint[:12]}…, "
            f"not on {model.name!r} (fingerprint {model.fingerprint[:12]}…)")
