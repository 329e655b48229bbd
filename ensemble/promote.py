"""Guarded promotion: a new ensemble version takes the alias (`production`) only when it beats
the version the alias points to now, on the selection split, by the paired test Table 3 uses.

Both versions answer the same selection examples through the serving path
(`ensemble.predict.vote_inputs`); each example is right or wrong for each (classification: the
label equals the gold one; free text: the example's metric above 0.5). The candidate is promoted
when it gets more of the examples only one of them gets right AND the exact McNemar test on the discordant examples (`paired_test`)
gives p <= `max_p`; otherwise the version stays registered and the alias stays where it was.
With no version under the alias yet, the candidate takes it.

    promotion = promote_if_better(store, registered, alias="production", max_p=0.05)
    promotion.promoted, promotion.line()   # True/False and one sentence saying why
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from softprompt.core.evaluation import encode_inputs
from softprompt.core.models.base import FrozenModel
from softprompt.core.sentinel import model_for
from softprompt.core.tasks import TaskSpec
from softprompt.core.tasks.holdout import Holdout
from softprompt.store import EnsembleError, RegisteredEnsemble, Store

from .build import SelectionSplit
from .evaluate import paired_test
from .loaded import input_factory, load_registered, manifest_model, manifest_task
from .predict import vote_inputs
from .scores import metric_value

DEFAULT_MAX_P = 0.05


class Promotion(NamedTuple):
    name: str
    alias: str
    version: str                      # the candidate
    incumbent: str | None             # the version the alias pointed to (None: unset)
    promoted: bool
    metric: str
    examples: int
    score: float | None               # the candidate's, on the selection split
    incumbent_score: float | None
    candidate_only: int               # examples only the candidate gets right
    incumbent_only: int               # ... only the incumbent
    p_value: float | None
    max_p: float

    def as_dict(self) -> dict:
        return self._asdict()

    def line(self) -> str:
        """One sentence: what happened to the alias, and the figures that decided it."""
        if self.incumbent is None:
            return f"promoted: {self.name}@{self.alias} -> version {self.version} (the alias was not set)"
        if self.incumbent == self.version:
            return f"{self.name}@{self.alias} already points to version {self.version}"
        figures = (f"{self.metric} {self.score:.4g} vs {self.incumbent_score:.4g} on {self.examples} selection "
                   f"examples, {self.candidate_only} vs {self.incumbent_only} discordant, p = {self.p_value:.3g}")
        if self.promoted:
            return f"promoted: {self.name}@{self.alias} -> version {self.version} (was {self.incumbent}; {figures})"
        return (f"not promoted: version {self.version} is not significantly better than version {self.incumbent} "
                f"({figures}; needs a higher score and p <= {self.max_p}); {self.name}@{self.alias} stays on "
                f"version {self.incumbent}")


def decide(candidate_right: Sequence[bool], incumbent_right: Sequence[bool], *, max_p: float) -> tuple[bool, tuple]:
    """Whether the candidate beats the incumbent (more examples right AND p <= max_p), with the
    paired test (candidate_only, incumbent_only, p).

    >>> decide([True] * 12 + [False], [False] * 12 + [True], max_p=0.05)[0]
    True
    >>> decide([True, True, False], [False, False, True], max_p=0.05)[0]   # 2 against 1: noise
    False
    """
    gold = [True] * len(candidate_right)
    test = paired_test(gold, list(candidate_right), list(incumbent_right))
    return test.first_only > test.second_only and test.p_value <= max_p, tuple(test)


def recorded_split(registered: RegisteredEnsemble, data_dir: str | None) -> SelectionSplit:
    """The selection split the version's members were chosen on (from its manifest)."""
    selection = registered.manifest.selection or {}
    if not selection.get("split"):
        raise EnsembleError(f"{registered.reference} records no selection split (built with --select top): "
                            "name one to compare on with --selection-split")
    holdout = selection.get("holdout")
    return SelectionSplit(selection["split"], Holdout(**holdout) if holdout else None, data_dir)


def scored(model: FrozenModel, store: Store, registered: RegisteredEnsemble, task: TaskSpec, examples: Sequence,
           metric: str) -> tuple[float, list[bool]]:
    """The version's `metric` on `examples` and [B] whether each voted answer is right."""
    loaded = load_registered(store, registered, model)
    make = input_factory(model, loaded, task=task)
    votes, _ = vote_inputs(model, loaded.table, [make(ids) for ids in encode_inputs(model, task, examples)])
    answers = [v.label for v in votes]
    if task.free_text:
        right = [metric_value(task, metric, [e], [a]) > 0.5 for e, a in zip(examples, answers)]
    else:
        right = [a.strip() == e.targets.strip() for e, a in zip(examples, answers)]
    return metric_value(task, metric, examples, answers), right


def promote_if_better(store: Store, candidate: RegisteredEnsemble, *, alias: str = "production",
                      max_p: float = DEFAULT_MAX_P, split: SelectionSplit | None = None, limit: int | None = None,
                      data_dir: str | None = None, model: FrozenModel | None = None) -> Promotion:
    """Moves `name@alias` to `candidate` only if it beats the alias's version (module doc); `split`:
    where to compare [default: the candidate's own selection split, its first `limit` examples]."""
    if not 0 < max_p <= 1:
        raise EnsembleError(f"the promotion threshold must be a p-value in (0, 1], got {max_p}")
    name, manifest = candidate.name, candidate.manifest
    incumbent = store.alias_version(name, alias)
    empty = Promotion(name, alias, candidate.version, incumbent, False, manifest.metric, 0, None, None, 0, 0, None,
                      max_p)
    if incumbent == candidate.version:
        return empty
    if incumbent is None:
        store.move_alias(name, alias, candidate.version)
        return empty._replace(promoted=True)
    split = split or recorded_split(candidate, data_dir)
    task = manifest_task(manifest)
    examples = split.examples(task, limit=limit or (manifest.selection or {}).get("examples"))
    if not examples:
        raise EnsembleError(f"the selection split {split.describe()} of task {task.name!r} has no examples")
    model = model_for(model or manifest_model(manifest), dtype=manifest.dtype)
    current = store.resolve_ensemble(f"{name}/{incumbent}")
    if current.manifest.model_fingerprint != manifest.model_fingerprint:
        raise EnsembleError(f"{name} version {incumbent} runs on another frozen model than version "
                            f"{candidate.version}: compare them with `ensemble evaluate` instead")
    score, mine = scored(model, store, candidate, task, examples, manifest.metric)
    incumbent_score, theirs = scored(model, store, current, task, examples, manifest.metric)
    better, (candidate_only, incumbent_only, p_value) = decide(mine, theirs, max_p=max_p)
    if better:
        store.move_alias(name, alias, candidate.version)
    return empty._replace(promoted=better, examples=len(examples), score=score, incumbent_score=incumbent_score,
                          candidate_only=candidate_only, incumbent_only=incumbent_only, p_value=p_value)
