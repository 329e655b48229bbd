"""The Ray Tune trainable: one trial is `core.train.train` reporting at every evaluation.

Each report carries the trial's metrics and a checkpoint folder: core's resumable checkpoint
(`arrays.safetensors` + `state.json`) plus `best_prompt/`, the best prompt artifact so far — the
driver logs that folder to MLflow when the trial ends. A retried or resumed trial copies Tune's
latest checkpoint into its working folder and continues from that step.

The frozen weights come from the driver through the object store (`share_model` there,
`unshare_model` here): on CPU, `jax.device_put` of the object store's read-only numpy arrays does
not copy, so trials on one node share one copy (measured with Gemma 3 270M in float32: 1.2 GB
private memory per trial instead of 2.2 GB). On an accelerator each trial's device holds its own
copy; the host copy is still shared. All trials share one JAX persistent compilation cache, so each
distinct step function is compiled once per campaign, not once per trial.

Test drill: with `TrialRuntime.fail_once_at_step`, every trial raises once right after reporting
that step (a marker file remembers it), to exercise retries from checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

from softprompt.core.checkpoint import STATE
from softprompt.core.models.base import FrozenModel
from softprompt.core.train import CHECKPOINT_FOLDER, EvalReport, train

from .space import train_config

BEST_PROMPT = "best_prompt"       # the best prompt artifact inside every reported checkpoint
WORK_FOLDER = "softprompt"        # inside the trial folder: checkpoint/ and best_prompt/


class TrialRuntime(NamedTuple):
    """What a trial needs besides its configuration (the same for every trial of a campaign)."""

    jax_cache_dir: str | None = None        # the shared persistent compilation cache
    drill_dir: str | None = None            # where the fail-once drill leaves its markers
    fail_once_at_step: int | None = None    # TEST DRILL: raise once after reporting this step
    adopt_checkpoints: bool = False         # PBT: continue another trial's checkpoint under this config


class DrillFailure(RuntimeError):
    """The deliberate failure of the fail-once drill."""


def configure_compilation_cache(directory: str | None) -> None:
    """Points JAX's persistent compilation cache at `directory`, caching every compilation."""
    if directory is None:
        return
    import jax

    Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def share_model(model: FrozenModel) -> FrozenModel:
    """The model with numpy weights, ready for `ray.put` (the object store keeps numpy arrays in
    shared memory and hands each process on the node read-only views of the same pages)."""
    import jax
    import numpy as np

    return dataclasses.replace(model, params=jax.tree_util.tree_map(np.asarray, model.params))


def unshare_model(model: FrozenModel) -> FrozenModel:
    """The model with JAX weights that alias the shared numpy buffers (no copy on CPU)."""
    import jax

    return dataclasses.replace(model, params=jax.device_put(model.params))


def run_trial(config: dict[str, Any], *, model: FrozenModel | None = None,
              runtime: TrialRuntime = TrialRuntime()) -> None:
    """Trains one sampled configuration, reporting to Tune at every evaluation."""
    from ray import tune

    configure_compilation_cache(runtime.jax_cache_dir)
    train_settings = train_config(config)
    work = Path(tune.get_context().get_trial_dir()) / WORK_FOLDER
    start_step = _restore(tune.get_checkpoint(), work, train_settings.to_dict(),
                          adopt=runtime.adopt_checkpoints)
    trial_id = tune.get_context().get_trial_id()

    def on_evaluation(report: EvalReport) -> None:
        if (work / BEST_PROMPT).exists():
            shutil.copytree(work / BEST_PROMPT, Path(report.checkpoint) / BEST_PROMPT)
        tune.report(_metrics(report, start_step=start_step, steps=train_settings.steps),
                    checkpoint=tune.Checkpoint.from_directory(report.checkpoint))
        _maybe_drill(runtime, trial_id, report.step)

    train(train_settings, out_dir=work / BEST_PROMPT, checkpoint_dir=work,
          model=unshare_model(model) if model is not None else None,
          on_evaluation=on_evaluation, progress=False)


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


def _maybe_drill(runtime: TrialRuntime, trial_id: str, step: int) -> None:
    if runtime.fail_once_at_step is None or step != runtime.fail_once_at_step or runtime.drill_dir is None:
        return
    marker = Path(runtime.drill_dir) / f"{trial_id}.failed-once"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(step))
    raise DrillFailure(f"fail-once drill: trial {trial_id} fails after reporting step {step}")
