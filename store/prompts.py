"""Prompt artifacts in the store: logging a trial's best prompt, fetching one by URI, its row in
an ensemble manifest (`prompt_member`), and loading it verified (`verified_prompt`: checksum, model
fingerprint, target format) onto a frozen model."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

from softprompt.core.fingerprint import file_sha256
from softprompt.core.models.base import FrozenModel
from softprompt.core.prompts import TENSOR_FILE, PromptArtifactError, SoftPrompt

from .client import StoreBase
from .manifest import EnsembleError, EnsembleManifest, Member
from .names import PROMPT_ARTIFACT_PATH


def prompt_uri(artifact_uri: str) -> str:
    """The URI of a run's prompt artifact folder, from the run's artifact URI."""
    return f"{artifact_uri.rstrip('/')}/{PROMPT_ARTIFACT_PATH}"


def prompt_member(run_id: str, artifact_uri: str, folder: str | os.PathLike, *, metric: float,
                  multiplicity: int = 1) -> Member:
    """The manifest row of the prompt a run logged: where it lives (`prompt_uri` of the run's
    `artifact_uri`) and the sha256 of its tensor file in the local `folder`."""
    return Member(run_id, prompt_uri(artifact_uri), file_sha256(Path(folder) / TENSOR_FILE), float(metric),
                  multiplicity)


def verified_prompt(folder: str | os.PathLike, *, sha256: str | None = None, fingerprint: str | None = None,
                    target_format: str | None = None, model: FrozenModel | None = None) -> SoftPrompt:
    """THE check of a prompt artifact: the prompt in `folder`, refused (PromptArtifactError naming
    the file) when its tensor's sha256 is not `sha256`, it was trained on another model than
    `model`, or its recorded model fingerprint or target format is not `fingerprint` or
    `target_format`. Each check runs only when its argument is given."""
    folder = Path(folder)
    if sha256 is not None:
        tensor = folder / TENSOR_FILE
        if not tensor.is_file():
            raise PromptArtifactError(f"{tensor}: missing prompt tensor file")
        if file_sha256(tensor) != sha256:
            raise PromptArtifactError(f"{tensor}: sha256 differs from the one recorded at selection "
                                      "(the artifact changed since)")
    prompt = SoftPrompt.load(folder, model=model)
    trained_with = prompt.hyperparameters.get("target_format", "plain")
    trained = (prompt.model_fingerprint, trained_with if target_format else None)
    wanted = (fingerprint or prompt.model_fingerprint, target_format)
    if trained != wanted:
        raise PromptArtifactError(f"{folder}: trained on {_described(*trained)}, not {_described(*wanted)}")
    return prompt


def _described(fingerprint: str, target_format: str | None) -> str:
    return f"model {fingerprint[:12]}…" + (f" with {target_format!r} targets" if target_format else "")


def verified_member(manifest: EnsembleManifest, number: int, folder: str | os.PathLike, *, where: str,
                    shown: str | None = None, model: FrozenModel | None = None) -> SoftPrompt:
    """Member `number` of `manifest` from its local `folder`, checked by `verified_prompt` against
    the manifest (sha256, model fingerprint, target format; and `model` when given). A mismatch is
    an EnsembleError that starts with `where` (e.g. "ensemble 'rte' version 3"), names the member
    and its run, and shows the file as `shown` (where the folder was fetched from) rather than as
    a temporary local path."""
    member = manifest.members[number]
    try:
        return verified_prompt(folder, sha256=member.sha256, fingerprint=manifest.model_fingerprint,
                               target_format=manifest.target_format, model=model)
    except PromptArtifactError as error:
        text = str(error).replace(str(folder), shown) if shown else str(error)
        raise EnsembleError(f"{where} member {number} (run {member.run_id}): {text}") from error


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
