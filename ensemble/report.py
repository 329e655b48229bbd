"""`ensemble evaluate` end to end: load a registered ensemble (and, for a greedy one, the top-N
of its candidate pool), score them in the Table 3 layout, print the table, and log it (metrics,
JSON and a PNG) on a run beside the ensemble's build."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.table import Table

from softprompt.core.progress import work_progress
from softprompt.core.prompts import PromptArtifactError
from softprompt.core.sentinel import model_for
from softprompt.core.tasks import TaskSpec
from softprompt.core.tasks.slices import overlap
from softprompt.core.text_prompts import text_prompt_answers
from softprompt.store import EnsembleError, RegisteredEnsemble, Store
from softprompt.store.names import TAG_BASELINE
from softprompt.store.prompts import verified_prompt

from .evaluate import LearnedRow, Table3, evaluate_ensembles
from .loaded import load_registered, manifest_model, manifest_task
from .scores import MemberScores

# A designed text prompt as a Table 3 row: (row name, (model, task, examples) -> its answers to them).
Baseline = tuple[str, Callable]


def designed_baselines(store: Store, registered: RegisteredEnsemble, *, split: str,
                       data_dir: str | None) -> list[Baseline]:
    """The designed prompts recorded beside the ensemble's members (their campaigns' baseline
    runs of the same task), each as a row answering the report's own examples."""
    manifest = registered.manifest
    experiments = sorted({store.get_run(member.run_id).experiment_id for member in manifest.members})
    rows = []
    for run in store.baseline_runs(experiments, task=manifest.task):
        def answer(model, task, examples, params=run.params):
            scored, answers = text_prompt_answers(model, task, template=params["template"], shots=int(params["shots"]),
                                                  seed=int(params["seed"]), split=split,
                                                  max_examples=len(examples), data_dir=data_dir)
            if [(e.inputs, e.targets) for e in scored] != [(e.inputs, e.targets) for e in examples]:
                raise EnsembleError(f"the designed prompt {run.run_id} was scored on other {task.name} examples "
                                    f"than the report's {len(examples)}")
            return answers
        rows.append((f"designed: {run.tags.get(TAG_BASELINE, run.name)}", answer))
    return rows


def check_disjoint(registered: RegisteredEnsemble, split: str, *, task: TaskSpec, max_examples: int | None = None,
                   data_dir: str | None = None) -> None:
    """Refuses to report an ensemble on records it was selected on: its selection split, or a
    slice of the report's split that meets the report's first `max_examples` records."""
    selection = registered.manifest.selection or {}
    chosen = selection.get("split")
    if selection.get("method") != "greedy" or not chosen:
        return

    def length(name: str) -> int:
        return sum(1 for _ in task.source.records(name, data_dir=data_dir))

    if overlap(chosen, split, length=length, second_limit=max_examples):
        held = " (a held-out part of it)" if selection.get("holdout") else ""
        raise EnsembleError(f"{registered.reference} was selected on the {chosen!r} split{held}, which the report "
                            f"on {split!r} would read: evaluate it on records it was not selected on (another "
                            "split, or a slice such as 'validation[:500]'), or the report would flatter it")


def _top_rows(store: Store, registered: RegisteredEnsemble, model, folder: Path) -> tuple[list, list[str]]:
    """The top-N candidates of a greedy ensemble that are not already members: (prompts, run ids),
    each verified as a member is (`verified_prompt` against the manifest)."""
    manifest = registered.manifest
    members = {m.run_id for m in manifest.members}
    prompts, run_ids = [], []
    for candidate in manifest.candidates[: int(manifest.selection["size"])]:
        if candidate.run_id in members:
            continue
        try:
            path = store.fetch_prompt(candidate.artifact_uri, folder / candidate.run_id)
            prompts.append(verified_prompt(path, sha256=candidate.sha256, fingerprint=manifest.model_fingerprint,
                                           target_format=manifest.target_format, model=model).embeddings)
        except PromptArtifactError as error:
            raise EnsembleError(f"{registered.reference}: top-N candidate {candidate.run_id}: {error}") from error
        run_ids.append(candidate.run_id)
    return prompts, run_ids


def ensemble_table(store: Store, registered: RegisteredEnsemble, model, task: TaskSpec, examples: Sequence, *,
                   baselines: dict[str, Sequence[str]] | None = None) -> Table3:
    """Table 3 of a registered ensemble: its members, and for a greedy ensemble also the top-N
    ensemble of its candidate pool, from one `MemberScores` of them all."""
    manifest = registered.manifest
    loaded = load_registered(store, registered, model)
    prompts = [p.embeddings for p in loaded.prompts]
    run_ids = [m.run_id for m in manifest.members]
    method = (manifest.selection or {}).get("method", "top")
    ensembles: dict = {f"ensemble ({method})": list(manifest.weights)}
    if manifest.pool:    # the learned vote first (the one evaluated), then its members' majority vote
        ensembles = {f"ensemble ({method}, learned)": LearnedRow(list(manifest.vote_weights), manifest.vote_bias),
                     f"ensemble ({method}, majority)": list(manifest.weights)}
    if method == "greedy" and manifest.candidates:
        with tempfile.TemporaryDirectory() as folder:
            extra, extra_ids = _top_rows(store, registered, model, Path(folder))
        top_ids = [c.run_id for c in manifest.candidates[: int(manifest.selection["size"])]]
        prompts, run_ids = prompts + extra, run_ids + extra_ids
        ensembles = {row: votes._replace(weights=list(votes.weights) + [0.0] * len(extra))
                     if isinstance(votes, LearnedRow) else votes + [0] * len(extra)
                     for row, votes in ensembles.items()}
        ensembles[f"ensemble (top-{len(top_ids)})"] = [1 if run_id in top_ids else 0 for run_id in run_ids]
    with work_progress(f"{len(prompts)} prompts on {len(examples)} {task.name} examples",
                       total=len(prompts) * len(examples)):
        scores = MemberScores.compute(model_for(model, manifest.target_format), task, prompts, examples,
                                      metric=manifest.metric)
    return evaluate_ensembles(scores, run_ids=run_ids, ensembles=ensembles,
                              rule="majority" if manifest.pool else manifest.vote_rule, baselines=baselines)


def render_table3(table: Table3, *, title: str) -> Table:
    """The paper's Table 3 layout as a rich table."""
    first = next(iter(table.weights.values()))
    view = Table("prompt", table.metric, "votes", title=title)
    for number, (run_id, value) in enumerate(table.members):
        votes = " ".join(f"{w[number]:g}" for w in table.weights.values())
        view.add_row(f"prompt {number} ({run_id[:8]})", f"{value:.2f}", votes, style=None if first[number] else "dim")
    view.add_row("average of members", f"{table.average:.2f}", "", style="dim")
    view.add_row("best member", f"{table.best:.2f}", "", style="dim")
    for name, value in table.baselines.items():
        view.add_row(name, f"{value:.2f}", "", style="dim")
    for row, value in table.ensembles.items():
        view.add_row(f"{row}, disagreement {table.disagreement[row]:.2f}", f"{value:.2f}",
                     f"{sum(table.weights[row]):g}", style="bold")
    return view


def paired_sentence(paired: dict, kind: str, *, examples: int) -> str:
    """One rival of Table3.paired in words: where it and the ensemble differ, and the test's verdict."""
    rival = paired["against"][kind]
    noise = "more than these examples' noise (p < 0.05)" if rival["p_value"] < 0.05 else \
        "within these examples' noise (p >= 0.05)"
    name = rival["name"][:8] if kind == "best tuned prompt" else rival["name"]     # a run id, or a row name
    return (f"{paired['ensemble']} against the {kind} ({name}): of {examples} examples it alone gets "
            f"{rival['ensemble_only']} right, the other {rival['rival_only']}; exact McNemar test p = "
            f"{rival['p_value']:.2g}, a gap {noise}")


def plot_table3(table: Table3, path: Path, *, title: str) -> Path:
    """A bar chart of the prompts, their average, the best, the baselines and the ensembles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ([f"p{n}" for n in range(len(table.members))] + ["avg", "best"] + list(table.baselines)
              + list(table.ensembles))
    values = ([v for _, v in table.members] + [table.average, table.best] + list(table.baselines.values())
              + list(table.ensembles.values()))
    colours = (["#9bb"] * len(table.members) + ["#777", "#555"] + ["#a85"] * len(table.baselines)
               + ["#c53"] * len(table.ensembles))
    figure, axis = plt.subplots(figsize=(1.5 + 0.8 * len(labels), 3.4))
    axis.bar(range(len(labels)), values, color=colours)
    axis.set_xticks(range(len(labels)), [label.replace("ensemble ", "ens. ") for label in labels],
                    rotation=30, ha="right", fontsize=7)
    axis.set_ylabel(table.metric)
    axis.set_ylim(max(0.0, min(values) - 10), min(100.0, max(values) + 5))
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def evaluate_and_log(store: Store, reference: str, *, split: str = "validation", max_examples: int | None = None,
                     data_dir: str | None = None, model: str | None = None, console: Console | None = None,
                     picture_dir: str | Path | None = None, designed: bool = True) -> Table3:
    """Evaluates the ensemble `reference` names; prints and logs the Table 3 layout (and writes
    its PNG into `picture_dir` when given). With `designed`, the designed prompts of the members'
    campaigns are scored on the same examples as rows of the table."""
    registered = store.resolve_ensemble(reference)
    manifest = registered.manifest
    task = manifest_task(manifest)
    check_disjoint(registered, split, task=task, max_examples=max_examples, data_dir=data_dir)
    frozen = model_for(manifest_model(manifest, model), dtype=manifest.dtype)
    examples = task.examples(split, data_dir=data_dir, limit=max_examples, training=False)
    baselines = designed_baselines(store, registered, split=split, data_dir=data_dir) if designed else []
    answered = {name: answer(frozen, task, examples) for name, answer in baselines}
    table = ensemble_table(store, registered, frozen, task, examples, baselines=answered)
    title = f"{registered.name} v{registered.version} on {task.name} {split} ({table.examples} examples)"
    console = console or Console(stderr=True)
    console.print(render_table3(table, title=title))
    for kind in (table.paired or {}).get("against", ()):
        console.print(paired_sentence(table.paired, kind, examples=table.examples), soft_wrap=True)
    metrics = {f"member_{n}_{table.metric}": value for n, (_, value) in enumerate(table.members)}
    metrics |= {f"{key}_{table.metric}": getattr(table, key) for key in ("average", "best", "ensemble")}
    with tempfile.TemporaryDirectory() as folder:
        picture = plot_table3(table, Path(picture_dir or folder) / "table3.png", title=title)
        store.log_ensemble_evaluation(registered, task=task.name, metrics=metrics, table=table.as_dict(),
                                      files=[picture])
    return table
