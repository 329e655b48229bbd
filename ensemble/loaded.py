"""A registered ensemble made ready to run: members fetched, checked and stacked into one table."""

from __future__ import annotations

import tempfile
from typing import NamedTuple

from mlflow.tracking import MlflowClient

from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import PromptTable, stack_prompts
from softprompt.core.prompts import TENSOR_FILE, SoftPrompt
from softprompt.core.sentinel import with_sentinel_targets

from .manifest import EnsembleError, EnsembleManifest
from .registry import fetch_prompt, file_sha256, resolve


class LoadedEnsemble(NamedTuple):
    name: str
    version: str
    manifest: EnsembleManifest
    prompts: list[SoftPrompt]   # in member order
    table: PromptTable          # [N, P, E] stacked member prompts

    @property
    def task(self) -> str:
        return self.manifest.task


def scoring_model(model: FrozenModel, manifest: EnsembleManifest) -> FrozenModel:
    """`model` formatting targets as the ensemble's members were trained to (sentinel: T5 only)."""
    if manifest.target_format != "sentinel":
        return model
    try:
        return with_sentinel_targets(model)
    except ValueError as error:
        raise EnsembleError(f"ensemble {manifest.name!r}: {error}") from error


def load_members(client: MlflowClient, manifest: EnsembleManifest, model: FrozenModel) -> list[SoftPrompt]:
    """Every member's prompt, each checked against the manifest's sha256 and the model's
    fingerprint; the first mismatch is an EnsembleError naming the member."""
    if manifest.model_fingerprint != model.fingerprint:
        raise EnsembleError(f"ensemble {manifest.name!r} was built for model fingerprint "
                            f"{manifest.model_fingerprint[:12]}…, not {model.name!r} ({model.fingerprint[:12]}…)")
    prompts = []
    with tempfile.TemporaryDirectory() as folder:
        for number, member in enumerate(manifest.members):
            path = fetch_prompt(client, member.artifact_uri, f"{folder}/{number}")
            if file_sha256(path / TENSOR_FILE) != member.sha256:
                raise EnsembleError(f"ensemble {manifest.name!r} member {number} (run {member.run_id}): "
                                    f"{TENSOR_FILE} sha256 differs from the manifest")
            try:
                prompt = SoftPrompt.load(path, model=model)
            except ValueError as error:
                raise EnsembleError(f"ensemble {manifest.name!r} member {number} (run {member.run_id}): {error}") from error
            trained_with = prompt.hyperparameters.get("target_format", "plain")
            if trained_with != manifest.target_format:
                raise EnsembleError(f"ensemble {manifest.name!r} member {number} (run {member.run_id}): trained with "
                                    f"{trained_with!r} targets, the ensemble scores {manifest.target_format!r} targets")
            prompts.append(prompt)
    return prompts


def load_ensemble(client: MlflowClient, reference: str, model: FrozenModel) -> LoadedEnsemble:
    """The ensemble a reference (`name@alias`, `name/3`, `models:/…`) names, ready to run."""
    registered = resolve(client, reference)
    prompts = load_members(client, registered.manifest, model)
    return LoadedEnsemble(registered.name, registered.version, registered.manifest, prompts,
                          stack_prompts([p.embeddings for p in prompts]))
