"""The Ray Tune trainable: one trial is `core.train.train` reporting at every evaluation.

Each report carries the trial's metrics and a checkpoint folder: core's resumable checkpoint
(`arrays.safetensors` + `state.json`) plus `best_prompt/`, the best prompt artifact so far — the
driver logs that folder to MLflow when the trial ends. The trial works in a scratch folder
outside the folders Ray copies; a retried or resumed trial copies Tune's latest checkpoint there
and continues from that step.

The frozen weights come from the driver through the object store (`shared_model.py`). All
trials share one JAX persistent compilation cache, so each distinct step function is compiled once
per campaign, not once per trial.

With a campaign's `fuse:` on, the trial computes its steps and evaluations on its node's step
server (`step_server.py`: one model copy, steps fused with the other trials'); it still keeps its
prompt, optimiser state, data order, checkpoints and reports, and reports `fused_group`, the mean
number of trials its steps were computed with. It leaves the server's group before each report and
joins again with its next step, so a trial Tune stops at a report (ASHA, the median rule) is never
waited for, and its slot's next trial joins the group with its first step.

Every report also carries `started_at` and `reported_at` (wall-clock seconds: when the trial
process began this trial, and this report), from which a campaign's refill gaps and idle slots are
read (`benchmarks/campaign_makespan.py`).

`TrialRuntime.after_report(trial_id, step)`, when given, runs in the trial after each report (the
Python API's hook: tests use it to fail a trial once and watch it retried from its checkpoint).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from softprompt.core.checkpoint import STATE
from softprompt.core.compilation_cache import use_compilation_cache
from softprompt.core.models.base import FrozenModel
from softprompt.core.train import CHECKPOINT_FOLDER, EvalReport, train

from .space import train_config
from .shared_model import unshare_model
from .step_server import FuseSettings, FusedSteps, step_server

BEST_PROMPT = "best_prompt"       # the best prompt artifact inside every reported checkpoint
WORK_FOLDER = "softprompt"        # in the trial's scratch folder: checkpoint/ and best_prompt/


class TrialRuntime(NamedTuple):
    """What a trial needs besides its configuration (the same for every trial of a campaign)."""

    jax_cache_dir: str | None = None        # the shared persistent compilation cache
    adopt_checkpoints: bool = False         # PBT: continue another trial's checkpoint under this config
    after_report: Callable[[str, int], None] | None = None   # (trial id, step), in the trial, after each report
    fuse: FuseSettings | None = None        # fused steps on the node's step server
    campaign: str = ""                      # names the step servers
    model_ref: tuple = ()                   # (ObjectRef of the shared model,) when fused


def run_trial(config: dict[str, Any], *, model: FrozenModel | None = None,
              runtime: TrialRuntime = TrialRuntime()) -> None:
    """Trains one sampled configuration, reporting to Tune at every evaluation."""
    from ray import tune

    started_at = time.time()
    use_compilation_cache(runtime.jax_cache_dir)
    train_settings = train_config(config)
    context = tune.get_context()
    work = scratch_folder(Path(context.get_trial_dir()).parent.name, context.get_trial_id())
    start_step = _restore(tune.get_checkpoint(), work, train_settings.to_dict(),
                          adopt=runtime.adopt_checkpoints)
    trial_id = tune.get_context().get_trial_id()
    model, steps = _fused_steps(train_settings, runtime, trial_id) if runtime.fuse is not None else (model, None)

    def on_evaluation(report: EvalReport) -> None:
        if (work / BEST_PROMPT).exists():
            shutil.copytree(work / BEST_PROMPT, Path(report.checkpoint) / BEST_PROMPT)
        fused_group = 0.0
        if steps is not None:
            fused_group = steps.group_since_report()
            # Tune may hold this trial in `report` a while (the driver's writes) or never return
            # (a scheduler stop): out of the server's group meanwhile, back in at the next step
            steps.leave()
        timing = {"fused_group": fused_group, "started_at": started_at, "reported_at": time.time()}
        tune.report(_metrics(report, start_step=start_step, steps=train_settings.steps) | timing,
                    checkpoint=tune.Checkpoint.from_directory(report.checkpoint))
        if runtime.after_report is not None:
            runtime.after_report(trial_id, report.step)

    try:
        train(train_settings, out_dir=work / BEST_PROMPT, checkpoint_dir=work,
              model=unshare_model(model) if model is not None else None,
              on_evaluation=on_evaluation, progress=False, steps=steps)
    finally:
        if steps is not None:
            steps.leave()   # the other trials on the server stop waiting for this one
    shutil.rmtree(work, ignore_errors=True)   # everything kept is in Tune's checkpoints now


def _fused_steps(settings, runtime: TrialRuntime, trial_id: str) -> tuple[FrozenModel, FusedSteps]:
    """The shared model (for the tokenizer and the prompt's init) and this node's step server."""
    import ray

    (model_ref,) = runtime.model_ref
    server = step_server(runtime.campaign, model_ref, runtime.fuse, model=settings.model, dtype=settings.dtype,
                         target_format=settings.target_format, jax_cache_dir=runtime.jax_cache_dir)
    return ray.get(model_ref), FusedSteps(server, trial_id)


def scratch_folder(experiment: str, trial_id: str) -> Path:
    """Where a trial writes as it trains: the machine's temporary folder, outside every folder Ray
    copies (Ray copying a trial folder while a prompt is being replaced fails its state save)."""
    return Path(tempfile.gettempdir()) / "softprompt-trials" / f"{experiment}-{trial_id}" / WORK_FOLDER


def _metrics(report: EvalReport, *, start_step: int, steps: int) -> dict[str, Any]:
    """What Tune records per evaluation (the scheduler reads `score`)."""
    import ray

    return {"step": report.step, "steps": steps, "start_step": start_step, "loss": report.loss,
            "score": report.score, "best_score": report.best_score, "best_step": report.best_step,
            "task_metrics": dict(report.metrics), "node_id": ray.get_runtime_context().get_node_id()}


def _restore(checkpoint, work: Path, config: dict[str, Any], *, adopt: bool) -> int:
    """Fills the working folder from Tune's checkpoint (the authority, even over newer local
    files); returns the step it resumes from (0 for a fresh start)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        shutil.copytree(folder, work / CHECKPOINT_FOLDER, ignore=shutil.ignore_patterns(BEST_PROMPT))
        if (Path(folder) / BEST_PROMPT).exists():
            shutil.copytree(Path(folder) / BEST_PROMPT, work / BEST_PROMPT)
    state_file = work / CHECKPOINT_FOLDER / STATE
    state = json.loads(state_file.read_text())
    if adopt and state.get("config") != config:
        state["config"] = config  # PBT: the donor's prompt and optimiser state, this trial's settings
        state_file.write_text(json.dumps(state, indent=1))
    return int(state["step"])
