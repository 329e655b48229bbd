"""Residual reparameterisation (core/reparam.py) on t5-tiny-random: trained as P + MLP(P), exported
folded into a plain [P, E] prompt that scores what the run scored, resumed exactly, weights frozen."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from softprompt.core.batching import encode_pair, make_batch
from softprompt.core.checkpoint import load_checkpoint
from softprompt.core.config import TrainConfig
from softprompt.core.evaluation import encode_inputs, evaluate_prompt
from softprompt.core.fused import fused_value_and_grad
from softprompt.core.optim import make_optimizer
from softprompt.core.prompts import SoftPrompt
from softprompt.core.reparam import fold, folded_prompt, init_trainable
from softprompt.core.scoring import prompt_loss
from softprompt.core.tasks import get_task
from softprompt.core.train import CHECKPOINT_FOLDER, train

RESIDUAL = dict(task="rte", model="t5-tiny-random", prompt_length=8, batch_size=4, max_eval_examples=8,
                learning_rate=0.3, init="sampled_vocab", reparam="residual", reparam_bottleneck=16)


def _checkpointed(folder, config: TrainConfig, model):
    """The trained parameters (prompt and MLP) a checkpoint holds."""
    initial = SoftPrompt.init(model, length=config.prompt_length, init=config.init, seed=config.seed)
    template = init_trainable(initial.embeddings, reparam="residual", bottleneck=config.reparam_bottleneck,
                              seed=config.seed)
    optimizer = make_optimizer(config.optimizer())
    return load_checkpoint(folder / CHECKPOINT_FOLDER, opt_state_template=optimizer.init(template),
                           config=config.to_dict(), trainable_template=template)


def test_the_exported_prompt_is_the_fold_scores_what_the_run_scored_and_resumes_exactly(tiny_model, tmp_path):
    config = TrainConfig(**RESIDUAL, steps=4, eval_every=2, seed=3)   # each new batch shape compiles a step
    straight = train(config, model=tiny_model, checkpoint_dir=tmp_path / "straight", progress=False)
    stopped = train(config, model=tiny_model, checkpoint_dir=tmp_path / "resumed", out_dir=tmp_path / "best",
                    progress=False, stop_after_step=2)
    saved = SoftPrompt.load(tmp_path / "best", model=tiny_model)
    assert saved.embeddings.shape == (8, tiny_model.d_model) and saved.embeddings.dtype == np.float32
    assert saved.hyperparameters["reparam"] == "residual" and saved.step == 2

    state = _checkpointed(tmp_path / "resumed", config, tiny_model)
    assert set(state.trainable) == {"prompt", "mlp"} and np.abs(np.asarray(state.trainable["mlp"]["up"])).max() > 0
    folded = folded_prompt(state.trainable)
    assert not np.allclose(folded, state.trainable["prompt"])          # the MLP changes what the model sees
    np.testing.assert_array_equal(saved.embeddings, folded)
    np.testing.assert_array_equal(state.best_prompt, folded)

    # the folded artifact scores exactly the metrics recorded at step 2, and has the loss the run trained on
    recorded = {k: v for k, v in stopped.history[0].items() if k not in ("step", "loss", "score", "eval_seconds")}
    task = get_task("rte")
    examples = task.examples("validation", limit=config.max_eval_examples)
    assert evaluate_prompt(tiny_model, saved.embeddings, task=task, examples=examples,
                           encoded=encode_inputs(tiny_model, task, examples)) == recorded
    pairs = [encode_pair(tiny_model, e.inputs, e.targets, max_input_tokens=task.max_input_tokens,
                         max_target_tokens=task.max_target_tokens) for e in task.examples("train", limit=4)]
    batch = make_batch(pairs, pad_id=tiny_model.tokenizer.pad_id)
    params = tiny_model.ops.training_params(tiny_model.params)
    unfolded = jax.jit(lambda t, p, b: prompt_loss(fold(t), tiny_model.ops, p, b))(state.trainable, params, batch)
    plain = jax.jit(lambda e, p, b: prompt_loss(e, tiny_model.ops, p, b))(saved.embeddings, params, batch)
    assert float(unfolded) == pytest.approx(float(plain), rel=1e-6, abs=1e-6)

    # resumed from step 2: the same prompt, MLP and optimiser state as the uninterrupted run
    resumed = train(config, model=tiny_model, checkpoint_dir=tmp_path / "resumed", progress=False)
    assert resumed.finished and [h["step"] for h in resumed.history] == [2, 4]
    np.testing.assert_array_equal(resumed.prompt.embeddings, straight.prompt.embeddings)
    ends = [_checkpointed(tmp_path / name, config, tiny_model) for name in ("straight", "resumed")]
    for one, other in zip(jax.tree_util.tree_leaves((ends[0].trainable, ends[0].opt_state)),
                          jax.tree_util.tree_leaves((ends[1].trainable, ends[1].opt_state))):
        np.testing.assert_array_equal(one, other)
    assert not np.array_equal(ends[1].trainable["prompt"], state.trainable["prompt"])   # steps 3 and 4 did run


def test_the_fold_starts_at_the_init_and_a_plain_run_keeps_a_bare_prompt():
    prompt = np.random.default_rng(0).normal(size=(5, 12)).astype(np.float32)
    residual = init_trainable(prompt, reparam="residual", bottleneck=3, seed=0)
    np.testing.assert_array_equal(folded_prompt(residual), prompt)
    assert residual["mlp"]["down"].shape == (12, 3) and residual["mlp"]["up"].shape == (3, 12)
    assert init_trainable(prompt, reparam="none", bottleneck=3, seed=0) is prompt
    with pytest.raises(ValueError, match="reparam"):
        TrainConfig(task="rte", reparam="mlp")


class _LocalSteps:
    """A step service computing in this process what a step server computes (core/fused.py)."""

    def __init__(self, model):
        self.model, self.params = model, model.ops.training_params(model.params)

    def __call__(self, prompt, pairs):
        (one,) = fused_value_and_grad(self.model.ops, self.params, [prompt], [pairs],
                                      pad_id=self.model.tokenizer.pad_id)
        return one.loss, one.grad

    def evaluate(self, prompt, *, task, examples, encoded):
        return evaluate_prompt(self.model, prompt, task=task, examples=examples, encoded=encoded)


def test_a_residual_run_on_a_step_service_matches_the_run_in_process(tiny_model):
    """Fused trials send the folded prompt; its gradient is carried back through the fold."""
    config = TrainConfig(**RESIDUAL, steps=4, eval_every=2, seed=1)
    alone = train(config, model=tiny_model, progress=False)
    served = train(config, model=tiny_model, progress=False, steps=_LocalSteps(tiny_model))
    np.testing.assert_allclose(served.prompt.embeddings, alone.prompt.embeddings, rtol=1e-4, atol=1e-5)
    assert [h["loss"] for h in served.history] == pytest.approx([h["loss"] for h in alone.history], rel=1e-4)


def test_a_checkpoint_written_before_reparam_existed_still_resumes(tiny_model, tmp_path):
    """Checkpoints of runs started before the reparam settings existed resume (they ran without)."""
    import json

    config = TrainConfig(**(RESIDUAL | {"reparam": "none", "reparam_bottleneck": 64}), steps=4, eval_every=2)
    train(config, model=tiny_model, checkpoint_dir=tmp_path, progress=False, stop_after_step=2)
    state_file = tmp_path / CHECKPOINT_FOLDER / "state.json"
    state = json.loads(state_file.read_text())
    for key in ("reparam", "reparam_bottleneck"):
        del state["config"][key]
    state_file.write_text(json.dumps(state))
    resumed = train(config, model=tiny_model, checkpoint_dir=tmp_path, progress=False)
    assert resumed.finished and [h["step"] for h in resumed.history] == [2, 4]
    with pytest.raises(ValueError, match="differs in reparam"):
        train(TrainConfig(**RESIDUAL, steps=4, eval_every=2), model=tiny_model, checkpoint_dir=tmp_path,
              progress=False)
