"""A registered ensemble made ready to run: member prompts fetched, verified (checksum, model
fingerprint, target format) and stacked into one table — from the store, or from the folder of
its MLflow model (what `mlflow.pyfunc.load_model` hands the loader)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NamedTuple, Sequence

from softprompt.core.inference import label_targets
from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import PromptTable, stack_prompts
from softprompt.core.prompts import SoftPrompt
from softprompt.core.sentinel import with_sentinel_targets
from softprompt.core.tasks import TaskSpec, get_task
from softprompt.store import EnsembleError, EnsembleManifest, RegisteredEnsemble, Store
from softprompt.store.manifest import MANIFEST_FILE
from softprompt.store.prompts import verified_member
from softprompt.store.registry import MEMBERS_FOLDER, ensemble_label, member_origin

from .predict import EnsembleInput


class LoadedEnsemble(NamedTuple):
    name: str
    version: str
    manifest: EnsembleManifest
    prompts: list[SoftPrompt]   # in member order
    table: PromptTable          # [N, P, E] stacked member prompts

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def members(self) -> int:
        return len(self.prompts)


def scoring_model(model: FrozenModel, target_format: str) -> FrozenModel:
    """`model` formatting targets as an ensemble's members were trained to (sentinel: T5 only)."""
    if target_format != "sentinel":
        return model
    try:
        return with_sentinel_targets(model)
    except ValueError as error:
        raise EnsembleError(f"sentinel targets: {error}") from error


def check_model(manifest: EnsembleManifest, model: FrozenModel) -> None:
    """Refuses a frozen model other than the one the ensemble was built for."""
    if manifest.model_fingerprint != model.fingerprint:
        raise EnsembleError(f"ensemble {manifest.name!r} was built for model fingerprint "
                            f"{manifest.model_fingerprint[:12]}… ({manifest.model or 'unnamed'}), not "
                            f"{model.name!r} ({model.fingerprint[:12]}…)")


def load_member_prompts(manifest: EnsembleManifest, folders: Sequence[str | os.PathLike],
                        model: FrozenModel, *, where: str | None = None,
                        shown: Sequence[str] | None = None) -> list[SoftPrompt]:
    """Each member's prompt from its local folder, checked against the manifest's sha256, the
    model's fingerprint and the ensemble's target format (`verified_member`, the check the driver
    of `softprompt serve` runs before deploying); the first mismatch is an EnsembleError naming
    the member (`where` and `shown`: how the message names the version and each member's file)."""
    check_model(manifest, model)
    where = where or f"ensemble {manifest.name!r}"
    return [verified_member(manifest, number, folder, where=where, shown=shown[number] if shown else None,
                            model=model)
            for number, folder in enumerate(folders)]


def assemble(name: str, version: str, manifest: EnsembleManifest, prompts: list[SoftPrompt]) -> LoadedEnsemble:
    return LoadedEnsemble(name, version, manifest, prompts, stack_prompts([p.embeddings for p in prompts]))


def load_registered(store: Store, registered: RegisteredEnsemble, model: FrozenModel) -> LoadedEnsemble:
    """A resolved ensemble version, its members fetched from the store and verified."""
    with tempfile.TemporaryDirectory() as folder:
        folders = store.fetch_member_prompts(registered, folder)
        prompts = load_member_prompts(registered.manifest, folders, model, where=ensemble_label(registered),
                                      shown=[member_origin(registered, n, f) for n, f in enumerate(folders)])
    return assemble(registered.name, registered.version, registered.manifest, prompts)


def load_ensemble(store: Store, reference: str, model: FrozenModel) -> LoadedEnsemble:
    """The ensemble a reference (`name@alias`, `name/3`, `models:/…`) names, ready to run."""
    return load_registered(store, store.resolve_ensemble(reference), model)


def manifest_task(manifest: EnsembleManifest) -> TaskSpec:
    """The task an ensemble answers: a built-in task by name, a user task from the YAML file its
    campaign named (which must exist where the ensemble is loaded)."""
    if manifest.task_source:
        if not os.path.exists(manifest.task_source):
            raise EnsembleError(f"ensemble {manifest.name!r} answers the user task {manifest.task!r} defined in "
                                f"{manifest.task_source}, which is not on this machine: copy the task file there")
        return get_task(manifest.task_source)
    return get_task(manifest.task)


def manifest_model(manifest: EnsembleManifest, model: str | None = None) -> str:
    """The frozen model to load an ensemble onto: `model` (another copy of it, named by the caller)
    or the one its manifest names — a built-in name, or a folder or file that must exist where the
    ensemble is loaded (else one EnsembleError line saying so). Whether it IS that model is the
    fingerprint's business (`check_model`), once it is loaded."""
    from softprompt.core.models import UnknownModelError, check_model_name, model_reference

    chosen = model_reference(model) if model else manifest.model
    try:
        check_model_name(chosen)
    except UnknownModelError:
        if model:
            raise EnsembleError(f"model {model!r} for ensemble {manifest.name!r}: not a built-in name, "
                                "a .gguf file or a folder with a config.json") from None
        raise EnsembleError(f"ensemble {manifest.name!r} was built on the model {chosen!r}, which is not on "
                            "this machine: copy it there, or name its copy (--model PATH)") from None
    return chosen


def input_factory(model: FrozenModel, loaded: LoadedEnsemble, *, task: TaskSpec | None = None,
                  first_prompt: int = 0):
    """A function `input_ids -> EnsembleInput` for this ensemble, its members at rows
    [first_prompt, first_prompt + N) of the table the inputs will run on."""
    task = task or manifest_task(loaded.manifest)
    targets = None if task.free_text else tuple(
        map(tuple, label_targets(scoring_model(model, loaded.manifest.target_format), task.label_words)))
    manifest = loaded.manifest

    def make(input_ids: list[int]) -> EnsembleInput:
        return EnsembleInput(list(input_ids), first_prompt, manifest.vote_weights, targets, task.label_words,
                             manifest.vote_rule, task.max_target_tokens, manifest.vote_bias)

    return make


def check_servable(loaded: LoadedEnsemble, task: TaskSpec) -> None:
    """Refuses an ensemble whose vote rule or target format cannot answer `task`'s inputs."""
    if task.free_text and loaded.manifest.vote_rule != "majority":
        raise EnsembleError(f"ensemble {loaded.name!r}: free-text task {task.name!r} supports only "
                            f"the majority vote, not {loaded.manifest.vote_rule!r}")
    bias = loaded.manifest.vote_bias
    if bias is not None and (task.free_text or len(bias) != len(task.label_words)):
        raise EnsembleError(f"ensemble {loaded.name!r}: its learned vote has a bias for {len(bias)} labels, "
                            f"task {task.name!r} has {len(task.label_words or ())}")
    if task.free_text and loaded.manifest.target_format != "plain":
        raise EnsembleError(f"ensemble {loaded.name!r}: free text is decoded with plain targets, "
                            f"its members were trained with {loaded.manifest.target_format!r} targets")


def read_model_manifest(data_path: str | os.PathLike) -> EnsembleManifest:
    """The manifest in the `data/` folder of an ensemble's MLflow model."""
    return EnsembleManifest.loads((Path(data_path) / MANIFEST_FILE).read_text(), source=str(data_path))


def load_model_folder(data_path: str | os.PathLike, model: FrozenModel) -> LoadedEnsemble:
    """The ensemble in the `data/` folder of its MLflow model (manifest + members/<i>)."""
    manifest = read_model_manifest(data_path)
    folders = [Path(data_path) / MEMBERS_FOLDER / str(number) for number in range(len(manifest.members))]
    return assemble(manifest.name, "", manifest, load_member_prompts(manifest, folders, model))
