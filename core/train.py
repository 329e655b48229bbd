"""One prompt-tuning run: `train(config)` tunes a soft prompt on a task with the model frozen.

The loop: batches drawn in a seeded order (one permutation per epoch), padded to bucket lengths;
a jitted step differentiates the target-token loss with respect to the prompt alone (the
frozen weights are a plain argument; with `reparam: residual`, with respect to the prompt and its
MLP, folded into the prompt the model sees: `reparam.py`); every `eval_every` steps the prompt is scored on
validation, the best one is kept (early stopping on the validation metric) and written as the
artifact, and a checkpoint is saved from which the run resumes exactly.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Callable, NamedTuple, Protocol, Sequence

import jax
import numpy as np
import optax

from .batching import EncodedPair, encode_pair, make_batch
from .checkpoint import TrainState, checkpoint_exists, load_checkpoint, save_checkpoint
from .config import SELECTION_SPLIT, TrainConfig
from .evaluation import encode_inputs, evaluate_prompt
from .models import load_model
from .models.base import FrozenModel
from .optim import OptimizerConfig, learning_rate_schedule, make_optimizer, with_learning_rate
from .progress import TrainProgress
from .prompts import SoftPrompt
from .reparam import fold, folded_prompt, init_trainable
from .scoring import prompt_loss
from .sentinel import model_for
from .sharding import Placement, default_placement, place_for_training
from .tasks import get_task

CHECKPOINT_FOLDER = "checkpoint"


class EvalReport(NamedTuple):
    """What `train` tells its `on_evaluation` callback after each evaluation."""

    step: int
    loss: float                 # mean training loss since the previous evaluation
    metrics: dict[str, float]   # the task's validation metrics (percent)
    score: float                # the task's selection score (default metric or mean of metrics)
    best_score: float
    best_step: int
    checkpoint: Path | None     # the checkpoint written at this step, when checkpointing


class TrainResult(NamedTuple):
    prompt: SoftPrompt               # the best prompt (by validation score), with its facts
    history: list[dict[str, float]]  # step, loss, score and metrics of every evaluation
    steps: int                       # optimiser steps taken
    finished: bool                   # False when stopped early by `stop_after_step`


class StepService(Protocol):
    """Where a run's gradients and evaluations are computed instead of in its own process: a step
    server holding the frozen model, fusing several trials' steps into one forward/backward
    (search/step_server.py). The run keeps its prompt, optimiser state, data order and checkpoints."""

    def __call__(self, prompt: np.ndarray, pairs: list[EncodedPair]) -> tuple[float, np.ndarray]:
        """(mean token loss, d loss / d prompt [P, E]) of `prompt` [P, E] on the batch `pairs`."""

    def evaluate(self, prompt: np.ndarray, *, task, examples: Sequence,
                 encoded: Sequence[list[int]]) -> dict[str, float]:
        """`evaluation.evaluate_prompt` on the service's model."""


def epoch_order(seed: int, epoch: int, size: int) -> np.ndarray:
    """The seeded order of the training examples in one epoch."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def next_batch(seed: int, epoch: int, offset: int, size: int, batch_size: int) -> tuple[list[int], int, int]:
    """Indices of the next batch and the data position after it (epoch, offset)."""
    indices: list[int] = []
    while len(indices) < batch_size:
        order = epoch_order(seed, epoch, size)
        take = order[offset: offset + batch_size - len(indices)]
        indices += take.tolist()
        offset += len(take)
        if offset >= size:
            epoch, offset = epoch + 1, 0
    return indices, epoch, offset


@functools.lru_cache(maxsize=8)
def _make_step(ops, parameter_scaling: bool):
    """The jitted update: (trainable, opt_state, params, batch, learning_rate) -> (trainable, opt_state,
    loss); `trainable` is the prompt [P, E] or a reparameterisation's pytree (`reparam.fold`).

    Cached per (family ops, parameter scaling): every other optimiser setting, the learning rate
    included, is an input (see `optim`), so runs in one process share compilations.
    """
    optimizer = make_optimizer(OptimizerConfig(parameter_scaling=parameter_scaling))

    @jax.jit
    def step(trainable, opt_state, params, batch, learning_rate):
        loss, grad = jax.value_and_grad(lambda t: prompt_loss(fold(t), ops, params, batch))(trainable)
        trainable, opt_state = _apply(optimizer, trainable, opt_state, grad, learning_rate)
        return trainable, opt_state, loss

    return step


@functools.lru_cache(maxsize=8)
def _make_update(parameter_scaling: bool):
    """The jitted optimiser update alone, for gradients computed elsewhere:
    (trainable, opt_state, prompt_grad, learning_rate) -> (trainable, opt_state); `prompt_grad`
    [P, E] is d loss / d fold(trainable), carried back to the trained parameters (the identity
    for a bare prompt)."""
    optimizer = make_optimizer(OptimizerConfig(parameter_scaling=parameter_scaling))

    @jax.jit
    def update(trainable, opt_state, prompt_grad, learning_rate):
        _, pullback = jax.vjp(fold, trainable)
        (grad,) = pullback(prompt_grad)
        return _apply(optimizer, trainable, opt_state, grad, learning_rate)

    return update


def _apply(optimizer, trainable, opt_state, grad, learning_rate):
    updates, opt_state = optimizer.update(grad, with_learning_rate(opt_state, learning_rate), trainable)
    return optax.apply_updates(trainable, updates), opt_state


def evaluation_examples(task, config: TrainConfig) -> list:
    """The examples that pick the checkpoint: the first `max_eval_examples` of `eval_split`, or
    with eval_split "selection", of the held-out selection split (training records never trained
    on), so the validation split is left to the final report."""
    if config.eval_split == SELECTION_SPLIT:
        return task.examples(config.train_split, data_dir=config.data_dir, holdout=config.selection_holdout(),
                             held_out=True, limit=config.max_eval_examples)
    return task.examples(config.eval_split, data_dir=config.data_dir, limit=config.max_eval_examples)


def prepare_model(config: TrainConfig, model: FrozenModel | None = None) -> FrozenModel:
    """The frozen model for `config`, with sentinel-prefixed targets when asked for."""
    return model_for(model or config.model, config.target_format, dtype=config.dtype)


def train(config: TrainConfig, *, out_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None,
          model: FrozenModel | None = None, on_evaluation: Callable[[EvalReport], None] | None = None,
          progress: bool = True, stop_after_step: int | None = None,
          steps: StepService | None = None, placement: Placement | None = None) -> TrainResult:
    """Tunes a soft prompt as `config` says and returns the best one.

    out_dir: where the best prompt artifact is (re)written after each improvement.
    checkpoint_dir: where checkpoints go; a checkpoint found there is resumed from.
    stop_after_step: return (unfinished) after this step's checkpoint — for tests and drills.
    steps: compute each step's gradient and each evaluation there (e.g. fused with other trials');
      the optimiser state, data order and checkpoints stay here, so the run is the same run.
    placement: the device mesh the frozen weights and batches go on (`core.sharding`); default:
      `default_placement(config.batch_size)` (all local devices; one device: none).

    Example:
      >>> result = train(TrainConfig(task="rte", steps=20, batch_size=4, eval_every=10))   # doctest: +SKIP
      >>> result.prompt.embeddings.shape                                                 # doctest: +SKIP
      (20, 64)
    """
    task = get_task(config.task, source=config.data_source)
    placement = (placement or default_placement(config.batch_size)) if steps is None else None
    if model is None and placement is not None:    # straight onto the mesh: never whole on one device
        model = load_model(config.model, dtype=config.dtype, placement=placement)
    model = prepare_model(config, model)
    train_examples = task.examples(config.train_split, data_dir=config.data_dir, holdout=config.selection_holdout())
    eval_examples = evaluation_examples(task, config)
    if not train_examples or not eval_examples:
        raise ValueError(f"task {task.name!r} has no {config.train_split if not train_examples else config.eval_split} examples")
    pairs = [encode_pair(model, ex.inputs, ex.targets, max_input_tokens=task.max_input_tokens,
                         max_target_tokens=task.max_target_tokens) for ex in train_examples]
    eval_inputs = encode_inputs(model, task, eval_examples)

    initial = SoftPrompt.init(model, length=config.prompt_length, init=config.init, seed=config.seed,
                              task=task.name, label_words=task.label_words, text=config.init_text,
                              path=config.init_path)
    trainable = init_trainable(initial.embeddings, reparam=config.reparam, bottleneck=config.reparam_bottleneck,
                               seed=config.seed)
    optimizer = make_optimizer(config.optimizer())
    state = _initial_state(trainable, optimizer, config, checkpoint_dir)
    step_fn = _make_step(model.ops, config.parameter_scaling)
    update_fn = _make_update(config.parameter_scaling)
    schedule = learning_rate_schedule(config.optimizer())
    model, params = place_for_training(model, placement) if steps is None else (model, None)   # else the service's
    if placement:
        state = state._replace(trainable=placement.replicate(state.trainable),
                               opt_state=placement.replicate(state.opt_state))
    scorer = steps.evaluate if steps is not None else functools.partial(evaluate_prompt, model)
    evaluate = functools.partial(scorer, task=task, examples=eval_examples, encoded=eval_inputs)

    run = _Run(model, task, config, evaluate, out_dir, checkpoint_dir)
    losses: list[float] = []
    with TrainProgress(total=config.steps, start=state.step, enabled=progress) as bar:
        while state.step < config.steps:
            indices, epoch, offset = next_batch(config.seed, state.epoch, state.offset, len(pairs), config.batch_size)
            if steps is not None:
                loss, grad = steps(folded_prompt(state.trainable), [pairs[i] for i in indices])
                trainable, opt_state = update_fn(state.trainable, state.opt_state, grad, schedule(state.step))
            else:
                batch = make_batch([pairs[i] for i in indices], pad_id=model.tokenizer.pad_id)
                if placement:
                    batch = placement.rows(batch)
                trainable, opt_state, loss = step_fn(state.trainable, state.opt_state, params, batch,
                                                     schedule(state.step))
            state = state._replace(trainable=trainable, opt_state=opt_state, step=state.step + 1, epoch=epoch,
                                   offset=offset)
            losses.append(float(loss))
            bar.advance(loss=losses[-1])
            if state.step % config.eval_every == 0 or state.step == config.steps:
                state, report = _evaluate_and_keep(run, state, losses)
                losses = []
                bar.show_metric(report.score, report.best_score)
                if on_evaluation:
                    on_evaluation(report)
                if stop_after_step is not None and state.step >= stop_after_step:
                    break
    best = _as_artifact(run, state)
    if out_dir is not None and state.history:
        best.save(out_dir)  # also when the best step came before a resume
    return TrainResult(best, state.history, state.step, finished=state.step >= config.steps)


class _Run(NamedTuple):
    """The fixed facts of one run that evaluation and saving need."""

    model: FrozenModel
    task: object
    config: TrainConfig
    evaluate: Callable[[np.ndarray], dict[str, float]]
    out_dir: str | Path | None
    checkpoint_dir: str | Path | None


def _initial_state(trainable, optimizer, config: TrainConfig, checkpoint_dir) -> TrainState:
    trainable = jax.tree_util.tree_map(jax.numpy.asarray, trainable)
    opt_state = optimizer.init(trainable)
    folder = Path(checkpoint_dir) / CHECKPOINT_FOLDER if checkpoint_dir else None
    if folder is not None and checkpoint_exists(folder):
        return load_checkpoint(folder, opt_state_template=opt_state, config=config.to_dict(),
                               trainable_template=trainable, defaults=TrainConfig.defaults())
    return TrainState(trainable=trainable, opt_state=opt_state, step=0, epoch=0, offset=0,
                      best_prompt=folded_prompt(trainable), best_score=-math.inf, best_step=0,
                      best_metrics={}, history=[])


def _evaluate_and_keep(run: _Run, state: TrainState, losses: Sequence[float]) -> tuple[TrainState, EvalReport]:
    """Scores the current prompt (folded), keeps it if best (writing the artifact), saves a checkpoint."""
    started = time.perf_counter()
    prompt = folded_prompt(state.trainable)
    metrics = run.evaluate(prompt)
    score = float(run.task.primary_score(metrics))
    loss = float(np.mean(losses)) if losses else float("nan")
    entry = {"step": state.step, "loss": loss, "score": score, "eval_seconds": time.perf_counter() - started}
    state = state._replace(history=state.history + [entry | metrics])
    if score > state.best_score:
        state = state._replace(best_prompt=prompt, best_score=score,
                               best_step=state.step, best_metrics=dict(metrics))
        if run.out_dir is not None:
            _as_artifact(run, state).save(run.out_dir)
    checkpoint = None
    if run.checkpoint_dir is not None:
        checkpoint = save_checkpoint(state, Path(run.checkpoint_dir) / CHECKPOINT_FOLDER,
                                     config=run.config.to_dict())
    report = EvalReport(state.step, loss, dict(metrics), score, state.best_score, state.best_step, checkpoint)
    return state, report


def _as_artifact(run: _Run, state: TrainState) -> SoftPrompt:
    """The best prompt so far as an artifact carrying the run's facts."""
    return SoftPrompt(np.asarray(state.best_prompt, np.float32), run.model.fingerprint, task=run.task.name,
                      initializer=run.config.init, hyperparameters=run.config.to_dict(), step=state.best_step,
                      metrics=dict(state.best_metrics))
