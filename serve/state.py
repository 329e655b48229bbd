"""What one replica serves, as ONE immutable object: the loaded ensembles (by name and by task)
and the combined prompt table all of them run on.

A request picks its ensemble from the state current when it arrives and keeps that state object
to the end, so a reload (which builds a new state and swaps it in with one assignment) never
changes the version under a request in flight.

Combined table: the members of every loaded ensemble stacked in load order,
[sum of N_e, P_max, E]; ensemble e owns rows [first_prompt_e, first_prompt_e + N_e).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from softprompt.core.models.base import FrozenModel
from softprompt.core.multi_prompt import PromptTable, stack_prompts
from softprompt.core.tasks import TaskSpec
from softprompt.ensemble.loaded import LoadedEnsemble, check_servable, input_factory, load_registered, manifest_task
from softprompt.ensemble.predict import EnsembleInput
from softprompt.store import EnsembleError, RegisteredEnsemble, Store


class NotServed(LookupError):
    """No loaded ensemble answers this task or name (HTTP 404)."""


class WrongTask(ValueError):
    """The requested ensemble serves another task (HTTP 422)."""


@dataclasses.dataclass(frozen=True)
class ServedEnsemble:
    """One loaded ensemble and where its members sit in the combined table."""

    reference: str                     # as asked for: `name@alias` (what a reload re-resolves)
    loaded: LoadedEnsemble
    task: TaskSpec
    first_prompt: int                  # index of member 0 in the combined table
    make_input: Callable[[list[int]], EnsembleInput]   # input ids -> this ensemble's EnsembleInput

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def members(self) -> int:
        return len(self.loaded.prompts)


@dataclasses.dataclass(frozen=True)
class ServeState:
    """The ensembles one replica serves (load order) and their combined PromptTable."""

    ensembles: tuple[ServedEnsemble, ...]
    table: PromptTable                 # [sum N_e, P_max, E]

    def named(self, name: str) -> ServedEnsemble:
        for served in self.ensembles:
            if served.name == name:
                return served
        raise NotServed(f"no ensemble named {name!r} is loaded (loaded: {self._listing()})")

    def select(self, task: str, name: str | None = None) -> ServedEnsemble:
        """The ensemble that answers `task`: `name` if given, else the first loaded for the task."""
        if name is not None:
            served = self.named(name)
            if task not in (served.task.name, served.loaded.task):
                raise WrongTask(f"ensemble {name!r} serves task {served.task.name!r}, not {task!r}")
            return served
        for served in self.ensembles:
            if task in (served.task.name, served.loaded.task):
                return served
        raise NotServed(f"no ensemble is loaded for task {task!r} (loaded: {self._listing()})")

    def replaced(self, model: FrozenModel, loaded: LoadedEnsemble) -> "ServeState":
        """A new state with the ensemble of the same name swapped for `loaded` (the table rebuilt)."""
        self.named(loaded.name)
        return build_state(model, [(s.reference, loaded if s.name == loaded.name else s.loaded)
                                   for s in self.ensembles])

    def _listing(self) -> str:
        return ", ".join(f"{s.name} v{s.version} ({s.task.name})" for s in self.ensembles) or "none"


def build_state(model: FrozenModel, entries: Sequence[tuple[str, LoadedEnsemble]]) -> ServeState:
    """(reference, loaded ensemble) pairs -> ServeState; ensemble names must be distinct."""
    names = [loaded.name for _, loaded in entries]
    if not entries or len(set(names)) != len(names):
        raise EnsembleError(f"serve needs one or more ensembles with distinct names, got {names}")
    served, first = [], 0
    for reference, loaded in entries:
        task = manifest_task(loaded.manifest)
        check_servable(loaded, task)
        served.append(ServedEnsemble(reference, loaded, task, first,
                                     input_factory(model, loaded, task=task, first_prompt=first)))
        first += len(loaded.prompts)
    table = stack_prompts([prompt.embeddings for _, loaded in entries for prompt in loaded.prompts])
    return ServeState(tuple(served), table)


def resolve_all(store: Store, references: Sequence[str]) -> list[RegisteredEnsemble]:
    """Every reference resolved to one registered version; all must share a model fingerprint
    (one replica holds one frozen model)."""
    registered = [store.resolve_ensemble(reference) for reference in references]
    fingerprints = {r.manifest.model_fingerprint for r in registered}
    if len(fingerprints) > 1:
        raise EnsembleError("the ensembles were built on different frozen models: "
                            + ", ".join(f"{r.name} -> {r.manifest.model or '?'} ({r.manifest.model_fingerprint[:12]}…)"
                                        for r in registered))
    return registered


def load_state(store: Store, model: FrozenModel, references: Sequence[str],
               registered: Sequence[RegisteredEnsemble]) -> ServeState:
    """Loads the exact versions `registered` (resolved from `references`) onto `model`."""
    return build_state(model, [(reference, load_registered(store, r, model))
                               for reference, r in zip(references, registered)])
