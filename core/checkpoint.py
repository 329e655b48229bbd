"""Mid-run checkpoints of a prompt-tuning run: everything needed to continue exactly.

A checkpoint folder holds `arrays.safetensors` (the trained parameters — the prompt, or with a
reparameterisation every leaf of the prompt and its MLP (`reparam.py`) — the best prompt so far,
and every optimiser-state leaf, in tree order) and `state.json` (step, data position, best score and
step, metric history, and the trial configuration it belongs to). No pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from .atomic import recover_folder, replace_folder, staging_folder

ARRAYS = "arrays.safetensors"
STATE = "state.json"


class CheckpointError(ValueError):
    """A checkpoint is unreadable or belongs to another configuration."""


class TrainState(NamedTuple):
    trainable: Any                   # the trained parameters: the prompt [P, E] float32, or a
                                     #   reparameterisation's pytree whose `reparam.fold` is the prompt
    opt_state: Any                   # the optax state for `trainable`
    step: int                        # optimiser steps taken
    epoch: int                       # data position: epoch ...
    offset: int                      # ... and examples consumed in it
    best_prompt: np.ndarray          # [P, E] the prompt with the best validation score so far
    best_score: float                # -inf before the first evaluation
    best_step: int
    best_metrics: dict[str, float]
    history: list[dict[str, float]]  # one entry per evaluation: step, loss, metrics


def save_checkpoint(state: TrainState, directory: str | os.PathLike, *, config: dict[str, Any]) -> Path:
    """Writes `state` into `directory`, replacing any checkpoint there as one (see `core.atomic`)."""
    directory = Path(directory)
    staging = staging_folder(directory)
    leaves = jax.tree_util.tree_leaves(state.opt_state)
    arrays = _trainable_arrays(state.trainable) | {"best_prompt": np.asarray(state.best_prompt)}
    arrays |= {f"opt/{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(staging / ARRAYS))
    meta = {"step": state.step, "epoch": state.epoch, "offset": state.offset,
            "best_score": state.best_score, "best_step": state.best_step,
            "best_metrics": state.best_metrics, "history": state.history,
            "opt_leaves": len(leaves), "config": config}
    (staging / STATE).write_text(json.dumps(meta, indent=1))
    return replace_folder(staging, directory)


def checkpoint_exists(directory: str | os.PathLike) -> bool:
    """Whether a complete checkpoint is at `directory` (recovering one a crash left mid-swap)."""
    return recover_folder(directory)


def _trainable_arrays(trainable: Any) -> dict[str, np.ndarray]:
    """A bare prompt is saved as `prompt` (as before reparameterisations existed); a pytree as
    `trainable/<i>`, its leaves in tree order."""
    if not isinstance(trainable, dict):
        return {"prompt": np.asarray(trainable)}
    return {f"trainable/{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(trainable))}


def _read_trainable(arrays: dict[str, np.ndarray], template: Any, directory: Path) -> Any:
    if not isinstance(template, dict):
        if "prompt" not in arrays:
            raise CheckpointError(f"{directory}: checkpoint holds no plain prompt")
        return jax.numpy.asarray(arrays["prompt"])
    leaves, treedef = jax.tree_util.tree_flatten(template)
    stored = [arrays.get(f"trainable/{i}") for i in range(len(leaves))]
    if any(a is None or a.shape != t.shape for a, t in zip(stored, leaves)):
        raise CheckpointError(f"{directory}: trained parameters do not match the reparameterisation's")
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(a) for a in stored])


def load_checkpoint(directory: str | os.PathLike, *, opt_state_template: Any, config: dict[str, Any],
                    trainable_template: Any = None, defaults: dict[str, Any] | None = None) -> TrainState:
    """Reads a checkpoint written by `save_checkpoint` for the same `config`.

    `opt_state_template` is a freshly initialised optimiser state with the right tree structure;
    `trainable_template` the freshly initialised trained parameters (None: a bare prompt);
    `defaults`: values of settings added since a checkpoint was written (it ran with them).
    """
    directory = Path(directory)
    try:
        meta = json.loads((directory / STATE).read_text())
        arrays = load_file(str(directory / ARRAYS))
    except (OSError, json.JSONDecodeError, SafetensorError) as error:
        raise CheckpointError(f"{directory}: unreadable checkpoint ({error})") from error
    stored = {key: value for key, value in (defaults or {}).items() if key in config} | meta.get("config", {})
    if stored != config:
        changed = sorted(k for k in set(config) | set(stored) if config.get(k) != stored.get(k))
        raise CheckpointError(f"{directory}: checkpoint was written for another configuration "
                              f"(differs in {', '.join(changed)})")
    template_leaves, treedef = jax.tree_util.tree_flatten(opt_state_template)
    if meta["opt_leaves"] != len(template_leaves):
        raise CheckpointError(f"{directory}: optimiser state has {meta['opt_leaves']} leaves, "
                              f"expected {len(template_leaves)}")
    leaves = [jax.numpy.asarray(arrays[f"opt/{i}"], dtype=t.dtype) for i, t in enumerate(template_leaves)]
    return TrainState(trainable=_read_trainable(arrays, trainable_template, directory),
                      opt_state=jax.tree_util.tree_unflatten(treedef, leaves),
                      step=meta["step"], epoch=meta["epoch"], offset=meta["offset"],
                      best_prompt=arrays["best_prompt"], best_score=meta["best_score"],
                      best_step=meta["best_step"], best_metrics=meta["best_metrics"],
                      history=meta["history"])
