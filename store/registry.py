"""Ensembles in the MLflow model registry: one registered model per ensemble name, one version
per build, aliases (`production`) pointing at versions.

Each version is a real MLflow model with a `python_function` flavour: its artifacts are the
manifest and copies of the member prompts,

    ensemble/MLmodel                                  loader_module: softprompt.ensemble.pyfunc
    ensemble/data/ensemble/manifest.json
    ensemble/data/ensemble/members/<i>/prompt.safetensors + prompt.json

so `mlflow.pyfunc.load_model("models:/NAME@production")` and `mlflow models serve` run it (the
loader loads the frozen model the manifest names and checks its fingerprint). References:
`name`, `name@alias`, `name/3`, or the `models:/name@alias` / `models:/name/3` URI forms.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import mlflow.pyfunc
from mlflow.exceptions import MlflowException

from softprompt.core.models.base import FrozenModel
from softprompt.core.prompts import SoftPrompt

from .client import StoreBase
from .manifest import MANIFEST_FILE, EnsembleError, EnsembleManifest, check_ensemble_name
from .names import (ENSEMBLE_ARTIFACT_PATH, FINISHED, KIND_ENSEMBLE, KIND_ENSEMBLE_EVAL, TAG_ENSEMBLE, TAG_KIND,
                    TAG_MODEL_FINGERPRINT, TAG_TASK)
from .prompts import PromptArtifacts, verified_member

LOADER_MODULE = "softprompt.ensemble.pyfunc"   # named, not imported: the store sits below the ensemble layer
DATA_FOLDER = "data/ensemble"   # inside the model: pyfunc copies the data folder under data/<its name>
MEMBERS_FOLDER = "members"
DEFAULT_ALIAS = "production"
_REFERENCE = re.compile(r"^(?:models:/)?(?P<name>[^@/:]+)(?:@(?P<alias>[\w-]+)|[:/](?P<version>\d+))?$")


class RegisteredEnsemble(NamedTuple):
    name: str
    version: str
    manifest: EnsembleManifest
    run_id: str            # the build run that logged the version's model
    source: str            # the artifact URI of the version's model folder

    @property
    def reference(self) -> str:
        """`name/version`: names exactly this version."""
        return f"{self.name}/{self.version}"


def ensemble_label(registered: RegisteredEnsemble) -> str:
    """How errors name a version: `ensemble 'rte-ensemble' version 3`."""
    return f"ensemble {registered.name!r} version {registered.version}"


def member_origin(registered: RegisteredEnsemble, number: int) -> str:
    """Where member `number`'s prompt folder lives in the store: its copy inside the version's model."""
    return f"{registered.source}/{DATA_FOLDER}/{MEMBERS_FOLDER}/{number}"


def parse_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(name, alias, version) of `NAME`, `NAME@ALIAS` or `NAME:VERSION` (MLflow's `models:/NAME/VERSION`
    is read too); a bare name means its `production` alias."""
    match = _REFERENCE.match(reference.strip())
    if not match:
        raise EnsembleError(f"malformed ensemble reference {reference!r} (use NAME, NAME@ALIAS or NAME:VERSION)")
    alias = match["alias"] or (None if match["version"] else DEFAULT_ALIAS)
    return match["name"], alias, match["version"]


def _softprompt_requirement() -> list[str]:
    try:
        return [f"softprompt=={importlib.metadata.version('softprompt')}"]
    except importlib.metadata.PackageNotFoundError:
        return ["softprompt"]


def write_model(manifest: EnsembleManifest, member_folders: Sequence[str | os.PathLike], path: Path) -> Path:
    """The ensemble as an MLflow pyfunc model folder at `path` (see the module doc)."""
    with tempfile.TemporaryDirectory() as staging:
        data = Path(staging) / Path(DATA_FOLDER).name
        (data / MEMBERS_FOLDER).mkdir(parents=True)
        (data / MANIFEST_FILE).write_text(manifest.dumps())
        for number, folder in enumerate(member_folders):
            shutil.copytree(folder, data / MEMBERS_FOLDER / str(number))
        mlflow.pyfunc.save_model(str(path), loader_module=LOADER_MODULE, data_path=str(data),
                                 pip_requirements=_softprompt_requirement())
    return path


class Registry(PromptArtifacts, StoreBase):
    """Registered ensembles (a part of `Store`)."""

    def register_ensemble(self, manifest: EnsembleManifest, member_folders: Sequence[str | os.PathLike], *,
                          experiment_id: str, alias: str | None = DEFAULT_ALIAS) -> RegisteredEnsemble:
        """A new version of `manifest.name` holding the manifest and the member prompts (one
        folder per manifest member, in order); `alias` is moved to it."""
        check_ensemble_name(manifest.name)
        if len(member_folders) != len(manifest.members):
            raise EnsembleError(f"ensemble {manifest.name!r}: {len(manifest.members)} members but "
                                f"{len(member_folders)} prompt folders")
        run = self.client.create_run(experiment_id, run_name=f"{manifest.name}-build",
                                     tags={TAG_KIND: KIND_ENSEMBLE, TAG_TASK: manifest.task,
                                           TAG_MODEL_FINGERPRINT: manifest.model_fingerprint})
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as folder:
            model_dir = write_model(manifest, member_folders, Path(folder) / ENSEMBLE_ARTIFACT_PATH)
            self.client.log_artifacts(run_id, str(model_dir), ENSEMBLE_ARTIFACT_PATH)
        self.client.set_terminated(run_id, FINISHED)
        try:
            self.client.create_registered_model(manifest.name, tags={TAG_TASK: manifest.task})
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{run.info.artifact_uri}/{ENSEMBLE_ARTIFACT_PATH}"
        version = self.client.create_model_version(manifest.name, source=source, run_id=run_id,
                                                   tags={TAG_TASK: manifest.task,
                                                         "members": str(len(manifest.members))})
        registered = RegisteredEnsemble(manifest.name, str(version.version), manifest, run_id, source)
        self.verified_members(registered)            # an alias never points at a version that cannot load
        if alias:
            self.client.set_registered_model_alias(manifest.name, alias, version.version)
        return registered

    def verified_members(self, registered: RegisteredEnsemble, *, model: FrozenModel | None = None) -> list[SoftPrompt]:
        """The version's member prompts in member order, fetched and each checked against the
        manifest (`verified_member`; with `model`, loaded onto it): what registration, the driver of
        `softprompt serve` and every loader run. EnsembleError names the ensemble, version, member
        and file of the first that does not match."""
        with tempfile.TemporaryDirectory() as folder:
            members = self.fetch_prompt(f"{registered.source}/{DATA_FOLDER}/{MEMBERS_FOLDER}", folder)
            return [verified_member(registered.manifest, number, members / str(number), model=model,
                                    where=ensemble_label(registered), shown=member_origin(registered, number))
                    for number in range(len(registered.manifest.members))]

    def resolve_ensemble(self, reference: str) -> RegisteredEnsemble:
        """The ensemble version a reference names, with its manifest."""
        name, alias, number = parse_reference(reference)
        try:
            version = (self.client.get_model_version(name, number) if number
                       else self.client.get_model_version_by_alias(name, alias))
        except MlflowException as error:
            raise EnsembleError(f"no registered ensemble version for {reference!r} ({error.message})") from error
        source = version.source
        with tempfile.TemporaryDirectory() as folder:
            try:
                text = Path(self.fetch_artifacts(f"{source}/{DATA_FOLDER}/{MANIFEST_FILE}", folder)).read_text()
            except Exception as error:  # noqa: BLE001 - any store failure means: no manifest there
                raise EnsembleError(f"{reference}: version {version.version} holds no {MANIFEST_FILE} at "
                                    f"{source}/{DATA_FOLDER}") from error
        manifest = EnsembleManifest.loads(text, source=reference)
        return RegisteredEnsemble(name, str(version.version), manifest, version.run_id, source)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version `name@alias` points to now (None when the alias is not set): one registry
        call, no artifact read (what a server following the alias polls)."""
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def move_alias(self, name: str, alias: str, version: str) -> None:
        """Points `name@alias` at `version` (a registered version of `name`)."""
        self.client.set_registered_model_alias(name, alias, version)

    def fetch_member_prompt(self, registered: RegisteredEnsemble, number: int,
                            destination: str | os.PathLike) -> Path:
        """Member `number`'s prompt folder downloaded into `destination`, checked as
        `verified_members` checks it."""
        folder = self.fetch_prompt(member_origin(registered, number), destination)
        verified_member(registered.manifest, number, folder, where=ensemble_label(registered),
                        shown=member_origin(registered, number))
        return folder

    def ensembles_with_alias(self, alias: str = DEFAULT_ALIAS) -> list[str]:
        """`name@alias` of every registered ensemble that has `alias`, sorted."""
        found = []
        token = None
        while True:
            page = self.client.search_registered_models(max_results=200, page_token=token)
            for model in page:
                if TAG_TASK not in (model.tags or {}):   # not a softprompt ensemble
                    continue
                # search results may carry empty aliases: read them from the model itself
                if alias in (self.client.get_registered_model(model.name).aliases or {}):
                    found.append(f"{model.name}@{alias}")
            token = page.token
            if not token:
                return sorted(found)

    def log_ensemble_evaluation(self, registered: RegisteredEnsemble, *, task: str, metrics: Mapping[str, float],
                                table: Mapping[str, Any], files: Sequence[str | os.PathLike] = ()) -> str:
        """A finished run beside the version's build run holding an evaluation: `metrics`, the
        `table` as `table3.json` and `files`; returns its id."""
        experiment_id = self.client.get_run(registered.run_id).info.experiment_id
        run = self.client.create_run(experiment_id, run_name=f"{registered.name}-v{registered.version}-eval",
                                     tags={TAG_KIND: KIND_ENSEMBLE_EVAL, TAG_TASK: task,
                                           TAG_ENSEMBLE: registered.reference})
        run_id = run.info.run_id
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))
        self.client.log_dict(run_id, dict(table), "table3.json")
        for path in files:
            self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, FINISHED)
        return run_id
