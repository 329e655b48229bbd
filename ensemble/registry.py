"""Ensembles in the MLflow model registry: one registered model per ensemble name, one version
per build (its manifest logged as the artifact of a small "ensemble" run), aliases such as
`production` pointing at a version. References: `name`, `name@alias`, `name/3`, or the
`models:/name@alias` / `models:/name/3` URI forms.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from softprompt.tracking import KIND_ENSEMBLE, TAG_KIND, TAG_MODEL_FINGERPRINT, TAG_TASK

from .manifest import MANIFEST_FILE, EnsembleError, EnsembleManifest

ARTIFACT_DIR = "ensemble"
_REFERENCE = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))?$")


class RegisteredEnsemble(NamedTuple):
    name: str
    version: str
    manifest: EnsembleManifest


def register(client: MlflowClient, manifest: EnsembleManifest, *, experiment_id: str,
             alias: str | None = "production") -> RegisteredEnsemble:
    """A new registered-model version holding `manifest`; `alias` is moved to it."""
    run = client.create_run(experiment_id, run_name=f"{manifest.name}-build",
                            tags={TAG_KIND: KIND_ENSEMBLE, TAG_TASK: manifest.task,
                                  TAG_MODEL_FINGERPRINT: manifest.model_fingerprint})
    client.log_dict(run.info.run_id, manifest.to_json(), f"{ARTIFACT_DIR}/{MANIFEST_FILE}")
    client.set_terminated(run.info.run_id, "FINISHED")
    try:
        client.create_registered_model(manifest.name, tags={TAG_TASK: manifest.task})
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(manifest.name, source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}",
                                          run_id=run.info.run_id,
                                          tags={TAG_TASK: manifest.task, "members": str(len(manifest.members))})
    if alias:
        client.set_registered_model_alias(manifest.name, alias, version.version)
    return RegisteredEnsemble(manifest.name, str(version.version), manifest)


def resolve(client: MlflowClient, reference: str) -> RegisteredEnsemble:
    """The ensemble version a reference names (a bare name means its `production` alias)."""
    match = _REFERENCE.match(reference.strip())
    if not match:
        raise EnsembleError(f"malformed ensemble reference {reference!r} (use NAME, NAME@ALIAS or NAME/VERSION)")
    name, alias, number = match["name"], match["alias"], match["version"]
    try:
        if number:
            version = client.get_model_version(name, number)
        else:
            version = client.get_model_version_by_alias(name, alias or "production")
    except MlflowException as error:
        raise EnsembleError(f"no registered ensemble version for {reference!r} ({error.message})") from error
    with tempfile.TemporaryDirectory() as folder:
        path = client.download_artifacts(version.run_id, f"{ARTIFACT_DIR}/{MANIFEST_FILE}", folder)
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise EnsembleError(f"{reference}: manifest is not valid JSON ({error})") from error
    return RegisteredEnsemble(name, str(version.version), EnsembleManifest.from_json(data, source=reference))


def fetch_prompt(client: MlflowClient, artifact_uri: str, destination: str | Path) -> Path:
    """Downloads one member's prompt artifact folder; returns its local path."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination),
                                                    tracking_uri=client.tracking_uri))


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
