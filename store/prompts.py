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
from .manifest import EnsembleError, EnsembleManifest
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


def verified_member(manifest: EnsembleManifest, number: int, folder: str | os.PathLike, *, where: str,
                    shown: str | None = None, model: FrozenModel | None = None) -> SoftPrompt:
    """Member `number` of `manifest` from its local `folder`, checked as every loader checks it:
    the tensor's sha256 against the manifest's, the model fingerprint (the manifest's, and
    `model`'s when given) and the target format. A mismatch is an EnsembleError that starts with
    `where` (e.g. "ensemble 'rte' version 3"), names the member and its run, and shows the file
    as `shown` (where the folder was fetched from) rather than as a temporary local path."""
    member = manifest.members[number]
    label = f"{where} member {number} (run {member.run_id})"
    try:
        prompt = verified_prompt(folder, sha256=member.sha256, model=model)
    except PromptArtifactError as error:
        text = str(error).replace(str(folder), shown) if shown else str(error)
        raise EnsembleError(f"{label}: {text}") from error
    trained_with = prompt.hyperparameters.get("target_format", "plain")
    if prompt.model_fingerprint != manifest.model_fingerprint or trained_with != manifest.target_format:
        raise EnsembleError(f"{label}: trained on model {prompt.model_fingerprint[:12]}… with {trained_with!r} "
                            f"targets; the ensemble is for {manifest.model_fingerprint[:12]}… with "
                            f"{manifest.target_format!r} targets")
    return prompt


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
