"""Auto-building an ensemble from a campaign's trials: candidates, selection, registration.

Candidates: trial runs of the task that ended with a prompt (FINISHED, or KILLED by the
scheduler), holding `best_<metric>`, on one model fingerprint and target format (those of the
best run), best first by that metric; ties broken by start time, then run id — so the same store
always gives the same ensemble. Each candidate's prompt is fetched and verified (checksum,
fingerprint, target format); a run whose prompt is missing or broken is skipped with a warning
naming it.

Selection (`select`):
- `greedy` (default): forward selection with replacement on the *selection split*, at most
  `top` votes; never below its best member on that split (see `selection`). The split is the
  training records the trials held out (`selection_examples`, `selection_seed` in their
  params), or a split the caller names — never the one a Table 3 report evaluates on.
- `top`: the first `top` candidates (the paper's protocol; no model needed).
Greedy scores every candidate once on the selection split (`scores.MemberScores`); the greedy
steps, the top-N ensemble's score there and the learned pool are arithmetic over those scores.
The manifest records the method, the split, the scores and the candidate pool (member rows).

The learned vote (`vote_rule="learned"`, classification only): greedy selects the members under
the majority vote, then a pool (`stacking`) of their label log-probabilities is fitted on the same
selection split; the manifest keeps its weights and bias.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from softprompt.core.models.base import FrozenModel
from softprompt.core.prompts import PromptArtifactError, SoftPrompt
from softprompt.core.sentinel import model_for
from softprompt.core.tasks import TaskSpec, get_task, is_task_file
from softprompt.core.tasks.holdout import Holdout
from softprompt.store import EnsembleError, EnsembleManifest, Member, RegisteredEnsemble, RunRecord, Store
from softprompt.store.manifest import check_ensemble_name
from softprompt.store.names import TAG_MODEL, TAG_MODEL_FINGERPRINT, TAG_TASK_SOURCE
from softprompt.store.prompts import prompt_member, prompt_uri, verified_prompt

from .loaded import check_model
from .scores import MemberScores, default_metric
from .selection import SELECT_METHODS, greedy_select, top_selection
from .stacking import Pool, fit_pool
from .voting import VOTE_RULES

logger = logging.getLogger(__name__)


class Candidate(NamedTuple):
    run: RunRecord
    folder: Path                 # the fetched prompt artifact
    prompt: SoftPrompt
    member: Member               # its manifest row (multiplicity 1; metric: its best validation metric)


class SelectionSplit(NamedTuple):
    """Where greedy selection scores: a held-out part of a split, or a whole named split."""

    split: str
    holdout: Holdout | None
    data_dir: str | None

    def describe(self) -> dict[str, Any]:
        return {"split": self.split, "holdout": self.holdout._asdict() if self.holdout else None}

    def examples(self, task: TaskSpec, limit: int | None = None) -> list:
        if self.holdout is not None:
            return task.examples(self.split, data_dir=self.data_dir, holdout=self.holdout, held_out=True,
                                 limit=limit)
        return task.examples(self.split, data_dir=self.data_dir, limit=limit, training=False)


def target_format(run: RunRecord) -> str:
    """How the run's prompt was trained to format targets (plain unless its campaign set it)."""
    return run.params.get("target_format", "plain")


def _none(value: str | None) -> str | None:
    return None if value in (None, "None") else value


def eligible_runs(store: Store, *, task: str, metric: str, experiments: Sequence[str] | None = None,
                  fingerprint: str | None = None) -> list[RunRecord]:
    """Trial runs of `task` that can join an ensemble, best first (see the module doc)."""
    try:
        runs = store.ended_trial_runs(task, experiments=list(experiments or []))
    except LookupError as error:
        raise EnsembleError(str(error)) from None
    key = f"best_{metric}"
    runs = [r for r in runs if key in r.metrics and TAG_MODEL_FINGERPRINT in r.tags]
    runs.sort(key=lambda r: (-r.metrics[key], r.start_time, r.run_id))
    if runs and fingerprint is None:
        fingerprint = runs[0].tags[TAG_MODEL_FINGERPRINT]
    runs = [r for r in runs if r.tags[TAG_MODEL_FINGERPRINT] == fingerprint]
    return [r for r in runs if target_format(r) == target_format(runs[0])]


def _named_task(runs: Sequence[RunRecord]) -> str | None:
    """What the runs' campaign named as their task: a built-in name or a task file's path."""
    return runs[0].tags.get(TAG_TASK_SOURCE) or runs[0].params.get("task") if runs else None


def task_of(runs: Sequence[RunRecord], task: str) -> TaskSpec:
    """The task spec the runs were trained on (a user task by the YAML path its campaign named)."""
    data_source = runs[0].params.get("data_source", "jsonl") if runs else "jsonl"
    return get_task(_named_task(runs) or task, source=data_source)


def spec_source(runs: Sequence[RunRecord]) -> str | None:
    """The YAML path the runs' campaign named for a user task (None for a built-in task)."""
    named = _named_task(runs)
    return named if named and is_task_file(named) else None


def fetch_candidates(store: Store, runs: Sequence[RunRecord], metric: str, folder: Path, *,
                     wanted: int | None = None) -> list[Candidate]:
    """The runs' prompts, fetched and verified, in run order; broken ones skipped with a warning;
    stops once `wanted` are in hand."""
    candidates = []
    for run in runs:
        if wanted is not None and len(candidates) >= wanted:
            break
        try:
            path = store.fetch_prompt(prompt_uri(run.artifact_uri), folder / run.run_id)
            prompt = verified_prompt(path, fingerprint=run.tags[TAG_MODEL_FINGERPRINT],
                                     target_format=target_format(run))
        except PromptArtifactError as error:
            logger.warning("skipping run %s: %s", run.run_id, error)
            continue
        candidates.append(Candidate(run, path, prompt, prompt_member(run.run_id, run.artifact_uri, path,
                                                                     metric=run.metrics[f"best_{metric}"])))
    return candidates


def recorded_selection_split(runs: Sequence[RunRecord]) -> SelectionSplit | None:
    """The holdout the runs' trials kept out of training (the first run's; None when it held
    out nothing)."""
    params = runs[0].params
    size = int(params.get("selection_examples", "0") or 0)
    if not size:
        return None
    return SelectionSplit(params.get("train_split", "train"),
                          Holdout(size, int(params.get("selection_seed", "0"))), _none(params.get("data_dir")))


def _same_holdout(run: RunRecord, first: RunRecord) -> bool:
    keys = ("selection_examples", "selection_seed", "train_split", "data_dir", "data_source")
    return all(run.params.get(key) == first.params.get(key) for key in keys)


def candidate_model(runs: Sequence[RunRecord], model: FrozenModel | None) -> FrozenModel:
    """The frozen model the candidates were trained on (`model`, else loaded by the first run's
    name and dtype), checked, formatting targets as they were trained (`model_for`)."""
    first = runs[0]
    frozen = model_for(model or first.tags.get(TAG_MODEL) or first.params["model"], target_format(first),
                       dtype=first.params.get("dtype", "float32"))
    return check_model(frozen, first.tags[TAG_MODEL_FINGERPRINT], owner="the candidates were trained on")


def learned_pool(scores: MemberScores) -> tuple[Pool, float]:
    """The learned vote of the prompts of `scores` (the greedy members) on their selection
    examples: the fitted pool and its score there."""
    unknown = scores.unknown_labels()
    if unknown:
        raise EnsembleError(f"the learned vote needs selection examples labelled with {list(scores.task.label_words)}, "
                            f"got {unknown[:3]}")
    pool = fit_pool(scores.labels, scores.gold())
    if not (pool.weights > 0).any():
        raise EnsembleError("the learned vote gave every member weight 0 on the selection split: "
                            "its prompts carry no signal there; use another vote rule")
    return pool, scores.value(scores.vote(pool.weights, "learned", bias=pool.bias))


def build_ensemble(store: Store, *, task: str, top: int, name: str | None = None,
                   experiments: Sequence[str] | None = None, metric: str | None = None,
                   alias: str | None = "production", vote_rule: str = "majority", allow_fewer: bool = False,
                   select: str = "greedy", selection_split: str | None = None, selection_limit: int | None = None,
                   data_dir: str | None = None, model: FrozenModel | None = None) -> RegisteredEnsemble:
    """Selects up to `top` members among the candidate runs of `task` (see the module doc) and
    registers them as a new ensemble version."""
    if name is not None:
        check_ensemble_name(name)        # before anything is read or written
    if top < 1:
        raise EnsembleError(f"--top must be >= 1, got {top}")
    if select not in SELECT_METHODS:
        raise EnsembleError(f"unknown selection {select!r}; choose one of {SELECT_METHODS}")
    if vote_rule not in VOTE_RULES:
        raise EnsembleError(f"unknown vote rule {vote_rule!r}; choose one of {VOTE_RULES}")
    if vote_rule == "learned" and select != "greedy":
        raise EnsembleError("the learned vote is fitted on the selection split: use it with --select greedy")
    probe = get_task(task) if Path(task).suffix in (".yaml", ".yml") else None
    spec_name = probe.name if probe else task
    metric = metric or default_metric(probe or _task_for_metric(store, task, experiments))
    runs = eligible_runs(store, task=spec_name, metric=metric, experiments=experiments)
    if not runs:
        raise EnsembleError(f"no eligible run for task {task!r} with best_{metric}"
                            + (f" in {', '.join(experiments)}" if experiments else ""))
    spec = task_of(runs, task)
    if vote_rule == "learned" and spec.free_text:
        raise EnsembleError(f"the learned vote weighs label probabilities: free-text task {spec.name!r} "
                            "supports only the majority vote")
    split = None
    pool = None
    if select == "greedy":
        if selection_split:
            split = SelectionSplit(selection_split, None, data_dir)
        else:
            split = recorded_selection_split(runs)
            if split is None:
                raise EnsembleError("greedy selection needs a selection split: the trials held out none "
                                    "(set fixed.selection_examples in the campaign), so name one with "
                                    "--selection-split SPLIT, or use --select top")
            runs = [r for r in runs if _same_holdout(r, runs[0])]
            split = split._replace(data_dir=data_dir or split.data_dir)
    with tempfile.TemporaryDirectory() as folder:
        candidates = fetch_candidates(store, runs, metric, Path(folder), wanted=top if select == "top" else None)
        if len(candidates) < top and not (allow_fewer and candidates):
            raise EnsembleError(f"only {len(candidates)} eligible run(s) with a usable prompt for task {task!r} "
                                f"with best_{metric} (need {top}; pass --allow-fewer to build a smaller ensemble)")
        selection: dict[str, Any] = {"method": select, "metric": metric, "size": top,
                                     "candidates": [c.member.to_json() for c in candidates]}
        if select == "top":
            multiplicities = top_selection(len(candidates), top)
        else:
            frozen = candidate_model(runs, model)
            examples = split.examples(spec, limit=selection_limit)
            if not examples:
                raise EnsembleError(f"the selection split {split.describe()} of task {spec.name!r} has no examples")
            scores = MemberScores.compute(frozen, spec, [c.prompt.embeddings for c in candidates], examples,
                                          metric=metric)
            rule = "majority" if vote_rule == "learned" else vote_rule    # greedy selects under a plain vote
            chosen = greedy_select(lambda weights: scores.vote(weights, rule), scores.value, candidates=scores.count,
                                   size=top, tiebreak=scores.gold_log_probability())
            multiplicities = chosen.multiplicities
            if vote_rule == "learned":
                pool, selection["learned_score"] = learned_pool(scores.take(chosen.members))
            for candidate, single in zip(selection["candidates"], chosen.singles):
                candidate["selection_score"] = single          # why a good prompt was left out
            top_score = scores.value(scores.vote(top_selection(scores.count, top), rule))
            selection |= split.describe() | {"examples": len(examples), "score": chosen.score,
                                             "best_member_score": chosen.best_member_score,
                                             "top_score": top_score, "history": list(chosen.history)}
        members = [(c, m) for c, m in zip(candidates, multiplicities) if m]
        first = runs[0]
        manifest = EnsembleManifest(
            name=name or f"{spec.name}-ensemble", task=spec.name, model=first.tags.get(TAG_MODEL, ""),
            model_fingerprint=first.tags[TAG_MODEL_FINGERPRINT], metric=metric,
            members=tuple(dataclasses.replace(c.member, multiplicity=m) for c, m in members),
            vote_rule=vote_rule, target_format=target_format(first),
            dtype=first.params.get("dtype", "float32"), selection=selection,
            task_source=spec_source(runs), pool=pool.describe() if pool else None)
        return store.register_ensemble(manifest, [c.folder for c, _ in members],
                                       experiment_id=first.experiment_id, alias=alias)


def _task_for_metric(store: Store, task: str, experiments: Sequence[str] | None) -> TaskSpec:
    """The task spec behind a name: built-in, or a user task found through its runs."""
    try:
        return get_task(task)
    except Exception:  # noqa: BLE001 - not built in: a user task's name, known through its runs
        runs = store.ended_trial_runs(task, experiments=list(experiments or []))
        if not runs:
            raise EnsembleError(f"unknown task {task!r}: not built in, and no trial run of that name") from None
        return task_of(runs, task)
