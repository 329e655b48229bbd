"""Prompt tuning end to end on t5-tiny-random: the frozen invariant, resume, the optimiser."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from softprompt.core.batching import bucket_length
from softprompt.core.config import TrainConfig
from softprompt.core.optim import OptimizerConfig, learning_rate_schedule, make_optimizer, with_learning_rate
from softprompt.core.prompts import SoftPrompt
from softprompt.core.train import _make_step, next_batch, train

SMALL = dict(task="rte", model="t5-tiny-random", prompt_length=8, batch_size=4, max_eval_examples=16,
             learning_rate=0.3, init="sampled_vocab")


@pytest.mark.parametrize("reparam", ["none", "residual"])
def test_frozen_weights_stay_bit_identical_and_the_prompt_moves(tiny_model, reparam):
    """Plain prompts and residual ones (P + MLP(P), folded into a plain prompt when saved) alike."""
    before = jax.tree_util.tree_map(np.array, tiny_model.params)
    initial = SoftPrompt.init(tiny_model, length=8, init="sampled_vocab", seed=0).embeddings
    result = train(TrainConfig(**SMALL, steps=8, eval_every=4, reparam=reparam), model=tiny_model, progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.prompt.embeddings.shape == initial.shape
    after = jax.tree_util.tree_map(np.array, tiny_model.params)
    for old, new in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
        assert old.dtype == new.dtype and np.array_equal(old, new)
    assert result.steps == 8 and result.finished
    assert not np.allclose(result.prompt.embeddings, initial)
    assert result.prompt.model_fingerprint == tiny_model.fingerprint


def test_loss_falls_when_training(tiny_model):
    result = train(TrainConfig(**SMALL, steps=40, eval_every=20), model=tiny_model, progress=False)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert last < first


def test_same_seed_same_prompt_and_resume_is_exact(tiny_model, tmp_path):
    config = TrainConfig(**SMALL, steps=12, eval_every=4, seed=7)
    straight = train(config, model=tiny_model, progress=False)
    again = train(config, model=tiny_model, progress=False)
    np.testing.assert_array_equal(straight.prompt.embeddings, again.prompt.embeddings)

    stopped = train(config, model=tiny_model, checkpoint_dir=tmp_path, progress=False, stop_after_step=4)
    assert not stopped.finished and stopped.steps == 4
    resumed = train(config, model=tiny_model, checkpoint_dir=tmp_path, out_dir=tmp_path / "best", progress=False)
    assert resumed.finished and resumed.steps == 12
    np.testing.assert_array_equal(resumed.prompt.embeddings, straight.prompt.embeddings)
    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    saved = SoftPrompt.load(tmp_path / "best", model=tiny_model)
    np.testing.assert_array_equal(saved.embeddings, straight.prompt.embeddings)
    assert saved.step == straight.prompt.step and saved.hyperparameters["seed"] == 7


def test_resume_refuses_another_configuration(tiny_model, tmp_path):
    train(TrainConfig(**SMALL, steps=4, eval_every=4), model=tiny_model, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train(TrainConfig(**SMALL, steps=8, eval_every=4, seed=1), model=tiny_model, checkpoint_dir=tmp_path,
              progress=False)


def test_schedule_warmup_and_staircase_decay():
    schedule = learning_rate_schedule(OptimizerConfig(0.3, warmup_steps=10, decay_factor=0.1, steps_per_decay=40))
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.15)
    assert float(schedule(39)) == pytest.approx(0.3)
    assert float(schedule(40)) == pytest.approx(0.03)
    assert float(schedule(85)) == pytest.approx(0.003)
    assert float(learning_rate_schedule(OptimizerConfig())(10_000)) == pytest.approx(0.3)


def test_injected_optimizer_matches_optax_adafactor_with_its_schedule():
    """Learning rate, decay rate and weight decay carried in the state give exactly the update of
    optax's Adafactor built with those settings and the schedule."""
    config = OptimizerConfig(0.2, decay_rate=0.7, weight_decay=1e-3, warmup_steps=3, decay_factor=0.5,
                             steps_per_decay=2)
    schedule = learning_rate_schedule(config)
    reference = optax.adafactor(learning_rate=lambda step: schedule(int(step)), decay_rate=0.7,
                                multiply_by_parameter_scale=False, weight_decay_rate=1e-3)
    injected = make_optimizer(config)
    params = jax.numpy.asarray(np.random.default_rng(0).normal(size=(4, 6)), jax.numpy.float32)
    ours, theirs = (params, injected.init(params)), (params, reference.init(params))
    for step in range(6):
        grad = jax.numpy.sin(ours[0] * (step + 1))
        updates, state = injected.update(grad, with_learning_rate(ours[1], schedule(step)), ours[0])
        ours = (optax.apply_updates(ours[0], updates), state)
        updates, state = reference.update(grad, theirs[1], theirs[0])
        theirs = (optax.apply_updates(theirs[0], updates), state)
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6, atol=1e-7)
    assert not np.allclose(ours[0], params)


def test_runs_differing_in_learning_rate_and_schedule_share_one_compiled_step(tiny_model):
    step = _make_step(tiny_model.ops, False)
    train(TrainConfig(**SMALL, steps=4, eval_every=4), model=tiny_model, progress=False)
    compiled = step._cache_size()
    changed = SMALL | {"learning_rate": 0.05}
    train(TrainConfig(**changed, steps=4, eval_every=4, warmup_steps=2, decay_factor=0.5, steps_per_decay=2,
                      decay_rate=0.6, weight_decay=0.0), model=tiny_model, progress=False)
    assert compiled >= 1 and step._cache_size() == compiled


def test_batches_walk_every_example_once_per_epoch():
    seen, epoch, offset = [], 0, 0
    for _ in range(5):
        indices, epoch, offset = next_batch(3, epoch, offset, 10, 4)
        seen += indices
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert (epoch, offset) == (2, 0)


def test_bucket_lengths_are_few_and_pad_under_a_third():
    assert [bucket_length(n) for n in (1, 8, 9, 12, 13, 33, 49, 100)] == [8, 8, 12, 12, 16, 48, 64, 128]
    assert len({bucket_length(n) for n in range(1, 513)}) == 13
    assert all(n <= bucket_length(n) < 1.5 * n for n in range(9, 513))
    assert bucket_length(300, cap=256) == 256


def test_bad_configuration_names_the_field():
    with pytest.raises(ValueError, match="prompt_length"):
        TrainConfig(task="rte", prompt_length=0)
    with pytest.raises(ValueError, match="decay_factor"):
        TrainConfig(task="rte", decay_factor=0.5)
    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict({"task": "rte", "lr": 0.3})


def test_checkpoints_can_be_picked_on_the_selection_split_leaving_validation_untouched(tiny_model):
    from softprompt.core.tasks import get_task
    from softprompt.core.tasks.holdout import Holdout
    from softprompt.core.train import evaluation_examples

    task = get_task("rte")
    config = TrainConfig(**SMALL | {"max_eval_examples": 12}, steps=4, eval_every=2, selection_examples=12,
                         selection_seed=3, eval_split="selection")
    picked = evaluation_examples(task, config)
    held = task.examples("train", holdout=Holdout(12, 3), held_out=True)
    kept = {e.inputs for e in task.examples("train", holdout=Holdout(12, 3))}
    assert [e.inputs for e in picked] == [e.inputs for e in held] and not {e.inputs for e in picked} & kept
    assert not {e.inputs for e in picked} & {e.inputs for e in task.examples("validation")}
    result = train(config, model=tiny_model, progress=False)
    assert result.steps == 4 and len(result.history) == 2
    with pytest.raises(ValueError, match="eval_split 'selection' needs selection_examples"):
        TrainConfig(task="rte", eval_split="selection")


def test_checkpoints_can_be_picked_on_a_slice_of_validation_the_report_does_not_read():
    from softprompt.core.tasks import get_task
    from softprompt.core.train import evaluation_examples

    task = get_task("rte")
    config = TrainConfig(task="rte", eval_split="validation[200:]", max_eval_examples=5)
    picked = [e.inputs for e in evaluation_examples(task, config)]
    assert picked == [e.inputs for e in task.examples("validation")][200:205]
    with pytest.raises(ValueError, match=r"eval_split 'validation\[200\]' is not NAME or NAME\[START:STOP\]"):
        TrainConfig(task="rte", eval_split="validation[200]")
