"""Prompt artifacts in the store: logging a trial's best prompt, fetching one by URI, and
loading it verified (checksum and model fingerprint) onto a frozen model."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from softprompt.core.fingerprint import file_sha256
from softprompt.core.models.base import FrozenModel
from softprompt.core.prompts import TENSOR_FILE, PromptArtifactError, SoftPrompt

from .client import StoreBase
from .names import PROMPT_ARTIFACT_PATH


def prompt_uri(artifact_uri: str) -> str:
    """The URI of a run's prompt artifact folder, from the run's artifact URI."""
    return f"{artifact_uri.rstrip('/')}/{PROMPT_ARTIFACT_PATH}"


def verified_prompt(folder: str | os.PathLike, *, sha256: str | None = None,
                    model: FrozenModel | None = None) -> SoftPrompt:
    """The prompt in `folder`, refused (PromptArtifactError) when its tensor's sha256 is not
    `sha256` or, with `model`, when it was trained on another model."""
    folder = Path(folder)
    if sha256 is not None:
        tensor = folder / TENSOR_FILE
        if not tensor.is_file():
            raise PromptArtifactError(f"{tensor}: missing prompt tensor file")
        if file_sha256(tensor) != sha256:
            raise PromptArtifactError(f"{tensor}: sha256 differs from the one recorded at selection "
                                      "(the artifact changed since)")
    return SoftPrompt.load(folder, model=model)


class PromptArtifacts(StoreBase):
    """Prompt artifacts of runs (a part of `Store`)."""

    def log_prompt(self, run_id: str, prompt_dir: str | os.PathLike) -> None:
        """Uploads a prompt artifact folder as the run's `prompt/` artifact."""
        self.client.log_artifacts(run_id, str(prompt_dir), PROMPT_ARTIFACT_PATH)

    def fetch_artifacts(self, artifact_uri: str, destination: str | os.PathLike) -> Path:
        """Downloads an artifact folder (any artifact URI of this store) into `destination`;
        returns its local path."""
        Path(destination).mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination),
                                                        tracking_uri=self.tracking_uri))

    def fetch_prompt(self, artifact_uri: str, destination: str | os.PathLike) -> Path:
        """A prompt artifact folder (`<run artifacts>/prompt`) downloaded into `destination`; a
        missing artifact is a PromptArtifactError naming the URI."""
        try:
            return self.fetch_artifacts(artifact_uri, destination)
        except Exception as error:  # noqa: BLE001 - any store failure means: no usable prompt here
            raise PromptArtifactError(f"no prompt artifact at {artifact_uri} ({error})") from error

    def download_prompt(self, run_id: str, destination: str | os.PathLike) -> Path:
        """A run's `prompt/` artifact downloaded into `destination` (load it with `SoftPrompt.load`)."""
        return self.fetch_prompt(prompt_uri(self.get_run(run_id).artifact_uri), destination)
