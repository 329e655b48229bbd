"""Fused trials (issue 16's core): K trials' batches in one forward/backward give each trial
exactly its own loss and prompt gradient, and a trial trained fused ends with the prompt it gets
alone — for T5 and Gemma 3 (tiny random models), with different prompt lengths, batch sizes and
learning rates fused together, and one trial stopped early."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from softprompt.core.batching import EncodedPair, encode_pair, make_batch
from softprompt.core.fused import fused_value_and_grad
from softprompt.core.models import load_model
from softprompt.core.models.gemma3 import Gemma3Config, Gemma3Ops, random_params
from softprompt.core.optim import OptimizerConfig, make_optimizer, with_learning_rate
from softprompt.core.scoring import prompt_loss
from softprompt.core.tasks import get_task


class Family:
    """A tiny random model of one family: ops, params, pad id, and K trials' batches."""

    def __init__(self, ops, params, pad_id: int, batches: list[list[EncodedPair]]):
        self.ops, self.params, self.pad_id, self.batches = ops, params, pad_id, batches


def _t5() -> Family:
    model = load_model("t5-tiny-random")
    task = get_task("rte")
    examples = task.examples("train", limit=6)
    pairs = [encode_pair(model, e.inputs, e.targets, max_input_tokens=48, max_target_tokens=8) for e in examples]
    return Family(model.ops, model.params, model.tokenizer.pad_id, [pairs[:2], pairs[2:5], pairs[5:]])


def _gemma() -> Family:
    config = Gemma3Config(vocab_size=64, d_model=16, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
                          ffn_dim=32, layer_types=("local", "local", "global"), sliding_window=3)
    rng = np.random.default_rng(0)
    pair = lambda n, t: EncodedPair(list(rng.integers(4, 64, n)), list(rng.integers(4, 64, t)) + [1], False)  # noqa: E731
    batches = [[pair(5, 1), pair(9, 2)], [pair(3, 1), pair(7, 1), pair(4, 3)], [pair(6, 2)]]
    return Family(Gemma3Ops(config), random_params(config, stddev=0.3), 0, batches)


@pytest.fixture(scope="module", params=["t5", "gemma3"])
def family(request) -> Family:
    return {"t5": _t5, "gemma3": _gemma}[request.param]()


def _prompts(family: Family, lengths=(4, 6, 3)) -> list[np.ndarray]:
    keys = jax.random.split(jax.random.key(7), len(lengths))
    return [np.asarray(jax.random.normal(key, (n, _width(family))) * 0.5) for key, n in zip(keys, lengths)]


def _width(family: Family) -> int:
    return int(family.ops.embed(family.params, np.zeros((1, 1), np.int32)).shape[-1])


_ALONE = jax.jit(jax.value_and_grad(prompt_loss), static_argnums=1)   # one trial's own step, as train() runs it


def _alone(family: Family, prompt, pairs):
    return _ALONE(prompt, family.ops, family.params, make_batch(pairs, pad_id=family.pad_id))


@pytest.mark.parametrize("rows_per_call, table_size", [(None, None), (2, 5)], ids=["one-call", "calls-of-2-rows"])
def test_each_trial_gets_its_own_loss_and_gradient(family, rows_per_call, table_size):
    """One call of all rows, or the rows sorted by length in calls of 2 rows (trials mixed in a
    call, a trial split across calls) with the table padded to 5 prompts: the same answer."""
    prompts = _prompts(family)
    fused = fused_value_and_grad(family.ops, family.params, prompts, family.batches, pad_id=family.pad_id,
                                 rows_per_call=rows_per_call, table_size=table_size)
    for prompt, pairs, got in zip(prompts, family.batches, fused):
        loss, grad = _alone(family, prompt, pairs)
        assert got.grad.shape == prompt.shape
        np.testing.assert_allclose(got.loss, float(loss), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.grad, np.asarray(grad), rtol=1e-4, atol=1e-6)


def test_trials_trained_fused_end_with_the_prompts_they_get_alone(family):
    """Three steps with each trial's own Adafactor and learning rate; trial 2 is stopped (as a
    scheduler would) after its first step and leaves the fused group."""
    learning_rates, stop_after = (0.3, 0.1, 0.03), {2: 1}
    optimizer = make_optimizer(OptimizerConfig())
    alone = [p.copy() for p in _prompts(family)]
    fused = [p.copy() for p in _prompts(family)]
    states_alone = [optimizer.init(p) for p in alone]
    states_fused = [optimizer.init(p) for p in fused]

    def update(prompt, state, grad, k):
        updates, state = optimizer.update(grad, with_learning_rate(state, learning_rates[k]), prompt)
        return np.asarray(optax.apply_updates(prompt, updates)), state

    for step in range(3):
        live = [k for k in range(3) if step < stop_after.get(k, 3)]
        for k in live:
            _, grad = _alone(family, alone[k], family.batches[k])
            alone[k], states_alone[k] = update(alone[k], states_alone[k], grad, k)
        results = fused_value_and_grad(family.ops, family.params, [fused[k] for k in live],
                                       [family.batches[k] for k in live], pad_id=family.pad_id)
        for k, result in zip(live, results):
            fused[k], states_fused[k] = update(fused[k], states_fused[k], result.grad, k)
    for k in range(3):
        np.testing.assert_allclose(fused[k], alone[k], rtol=1e-4, atol=1e-5)
    assert not np.allclose(alone[0], _prompts(family)[0])        # the prompts did move


def test_a_batch_per_prompt_is_required(family):
    with pytest.raises(ValueError, match="one batch per prompt"):
        fused_value_and_grad(family.ops, family.params, _prompts(family)[:2], family.batches, pad_id=family.pad_id)


def test_fused_evaluations_equal_each_prompt_evaluated_alone():
    """Three prompts of different lengths, each on its own examples (different counts), predicted
    in one pass: the metrics evaluate_prompt gives each alone."""
    from softprompt.core.evaluation import encode_inputs, evaluate_prompt
    from softprompt.core.fused import fused_evaluate
    from softprompt.core.prompts import SoftPrompt

    model, task = load_model("t5-tiny-random"), get_task("rte")
    examples = task.examples("validation", limit=24)
    sets = [examples[:8], examples[8:20], examples[20:]]
    prompts = [SoftPrompt.init(model, length=n, init="sampled_vocab", seed=n).embeddings for n in (3, 7, 5)]
    evaluations = [(chosen, encode_inputs(model, task, chosen)) for chosen in sets]
    fused = fused_evaluate(model, prompts, task, evaluations)
    alone = [evaluate_prompt(model, prompt, task, chosen) for prompt, chosen in zip(prompts, sets)]
    assert fused == alone
    assert len({m["accuracy"] for m in alone}) > 1          # the prompts and sets do differ
    with pytest.raises(ValueError, match="one evaluation per prompt"):
        fused_evaluate(model, prompts[:2], task, evaluations)
