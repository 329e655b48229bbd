"""A registered ensemble made ready to run on its frozen model (`check_model`): member prompts
fetched, verified (`store.prompts.verified_member`: checksum, model fingerprint, target format)
and stacked into one table — from the store, or from the folder of its MLflow model (what
`mlflow.pyfunc.load_model` hands the loader)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from softprompt.core.inference import label_targets
from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import PromptTable, stack_prompts
from softprompt.core.prompts import SoftPrompt
from softprompt.core.sentinel import model_for
from softprompt.core.tasks import TaskSpec, get_task
from softprompt.store import EnsembleError, EnsembleManifest, RegisteredEnsemble, Store
from softprompt.store.manifest import MANIFEST_FILE
from softprompt.store.prompts import verified_member
from softprompt.store.registry import MEMBERS_FOLDER

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


def check_model(model: FrozenModel, fingerprint: str, *, owner: str) -> FrozenModel:
    """`model`, refused unless it is the frozen model of fingerprint `fingerprint`; `owner` says
    whose model that is ("ensemble 'rte' was built for", "the candidates were trained on")."""
    if model.fingerprint != fingerprint:
        raise EnsembleError(f"{owner} model fingerprint {fingerprint[:12]}…, not {model.name!r} "
                            f"({model.fingerprint[:12]}…)")
    return model


def built_for(manifest: EnsembleManifest) -> str:
    """`check_model`'s owner for an ensemble."""
    return f"ensemble {manifest.name!r} (on {manifest.model or 'an unnamed model'}) was built for"


def assemble(name: str, version: str, manifest: EnsembleManifest, prompts: list[SoftPrompt]) -> LoadedEnsemble:
    return LoadedEnsemble(name, version, manifest, prompts, stack_prompts([p.embeddings for p in prompts]))


def load_registered(store: Store, registered: RegisteredEnsemble, model: FrozenModel) -> LoadedEnsemble:
    """A resolved ensemble version on `model` (which must be the one it was built for), its members
    fetched from the store and verified (`Store.verified_members`)."""
    check_model(model, registered.manifest.model_fingerprint, owner=built_for(registered.manifest))
    prompts = store.verified_members(registered, model=model)
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
        map(tuple, label_targets(model_for(model, loaded.manifest.target_format), task.label_words)))
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
    """The ensemble in the `data/` folder of its MLflow model (manifest + members/<i>) on `model`
    (which must be the one it was built for), each member verified (`verified_member`)."""
    manifest = read_model_manifest(data_path)
    check_model(model, manifest.model_fingerprint, owner=built_for(manifest))
    where = f"ensemble {manifest.name!r}"
    prompts = [verified_member(manifest, number, Path(data_path) / MEMBERS_FOLDER / str(number), where=where,
                               model=model) for number in range(len(manifest.members))]
    return assemble(manifest.name, "", manifest, prompts)
