"""Soft prompts: initialisers, the artifact on disk, placement and the multi-prompt forward."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softprompt.core.multi_prompt import stack_prompts
from softprompt.core.prompt_init import MOST_COMMON_TOKENS, PromptInitError
from softprompt.core.prompts import FingerprintMismatchError, PromptArtifactError, SoftPrompt

MODELS = ["tiny_model", "tiny_gemma3"]


def _embed(model, ids):
    return np.asarray(model.ops.embed(model.params, jnp.asarray(ids, jnp.int32)), np.float32)


def test_random_uniform_is_symmetric_and_seeded(tiny_model):
    prompt = SoftPrompt.init(tiny_model, length=50, init="random_uniform", seed=3)
    table = prompt.embeddings
    assert table.shape == (50, tiny_model.d_model) and table.dtype == np.float32
    assert table.min() >= -0.5 and table.max() <= 0.5
    assert table.min() < -0.4 and table.max() > 0.4  # both halves of [-0.5, 0.5] are drawn
    again = SoftPrompt.init(tiny_model, length=50, init="random_uniform", seed=3).embeddings
    other = SoftPrompt.init(tiny_model, length=50, init="random_uniform", seed=4).embeddings
    np.testing.assert_array_equal(table, again)
    assert not np.array_equal(table, other)


def test_sampled_vocab_rows_are_common_token_embeddings(tiny_model):
    prompt = SoftPrompt.init(tiny_model, length=12, init="sampled_vocab", seed=0).embeddings
    pool = np.asarray(tiny_model.tokenizer.ordinary_ids())[:MOST_COMMON_TOKENS]
    vocab = _embed(tiny_model, pool)
    for row in prompt:
        assert np.any(np.all(vocab == row, axis=1)), "each row must be one common token's embedding"
    assert len({row.tobytes() for row in prompt}) == 12  # drawn without replacement
    np.testing.assert_array_equal(prompt, SoftPrompt.init(tiny_model, length=12, init="sampled_vocab",
                                                          seed=0).embeddings)


def test_class_labels_fill_one_position_per_label(tiny_model):
    labels = ("entailment", "not_entailment")
    prompt = SoftPrompt.init(tiny_model, length=5, init="class_labels", seed=0, label_words=labels).embeddings
    for position, word in enumerate(labels):
        ids = tiny_model.tokenizer.encode(word)
        np.testing.assert_allclose(prompt[position], _embed(tiny_model, ids).mean(axis=0), rtol=1e-6)
    assert len(tiny_model.tokenizer.encode("not_entailment")) > 1  # the mean really averages pieces
    with pytest.raises(PromptInitError, match="label words"):
        SoftPrompt.init(tiny_model, length=5, init="class_labels", seed=0)


def test_from_text_and_from_file(tiny_model, tmp_path):
    text = "commonsense pronoun resolution"
    ids = tiny_model.tokenizer.encode(text)
    prompt = SoftPrompt.init(tiny_model, length=len(ids), init="from_text", text=text)
    np.testing.assert_array_equal(prompt.embeddings, _embed(tiny_model, ids))
    prompt.save(tmp_path / "p")
    copied = SoftPrompt.init(tiny_model, length=len(ids), init="from_file", path=tmp_path / "p")
    np.testing.assert_array_equal(copied.embeddings, prompt.embeddings)
    shorter = SoftPrompt.init(tiny_model, length=2, init="from_file", path=tmp_path / "p")
    np.testing.assert_array_equal(shorter.embeddings, prompt.embeddings[:2])
    with pytest.raises(PromptInitError, match="fewer than the"):     # never a prompt shorter than asked
        SoftPrompt.init(tiny_model, length=len(ids) + 1, init="from_file", path=tmp_path / "p")
    with pytest.raises(PromptInitError, match="unknown prompt init"):
        SoftPrompt.init(tiny_model, length=4, init="zeros")


def test_artifact_round_trip_and_its_errors(tiny_model, tmp_path):
    prompt = SoftPrompt.init(tiny_model, length=7, seed=1).replace(task="rte", step=40, metrics={"accuracy": 61.5})
    folder = prompt.save(tmp_path / "artifact")
    meta = json.loads((folder / "prompt.json").read_text())
    assert meta["model_fingerprint"] == tiny_model.fingerprint and meta["length"] == 7 and meta["step"] == 40
    loaded = SoftPrompt.load(folder, model=tiny_model)
    np.testing.assert_array_equal(loaded.embeddings, prompt.embeddings)
    assert loaded.metrics == {"accuracy": 61.5} and loaded.task == "rte"

    other = prompt.replace(model_fingerprint="0" * 64).save(tmp_path / "other")
    with pytest.raises(FingerprintMismatchError, match="fingerprint"):
        SoftPrompt.load(other, model=tiny_model)

    tensor = folder / "prompt.safetensors"
    tensor.write_bytes(tensor.read_bytes()[:-20])
    with pytest.raises(PromptArtifactError, match="prompt.safetensors"):
        SoftPrompt.load(folder)
    (folder / "prompt.json").write_text("{not json")
    with pytest.raises(PromptArtifactError, match="prompt.json"):
        SoftPrompt.load(folder)


@functools.cache
def _jitted(ops):
    return jax.jit(ops.target_logits)


def _logits(model, **arrays):
    """The family's jitted teacher-forced logits."""
    return _jitted(model.ops)(model.params, **arrays)


def _forward(model, prompt, input_ids, target_ids):
    """Teacher-forced logits of one row: [T, V]."""
    prompt = jnp.asarray(prompt, jnp.float32)[None]
    return np.asarray(_logits(
        model, 
prompts=prompt, prompt_mask=jnp.ones(prompt.shape[:2], bool),
        input_ids=jnp.asarray([input_ids], jnp.int32), input_mask=jnp.ones((1, len(input_ids)), bool),
        target_ids=jnp.asarray([target_ids], jnp.int32), target_mask=jnp.ones((1, len(target_ids)), bool)))[0]


@pytest.mark.parametrize("model_name", MODELS)
def test_prompt_from_text_equals_the_text_as_tokens(model_name, request):
    model = request.getfixturevalue(model_name)
    text_ids = model.tokenizer.encode("Is this review positive or negative?")
    input_ids = model.ops.format_input(model.tokenizer.encode("a gorgeous, witty film"))
    target_ids = model.ops.format_target(model.tokenizer.encode("positive"))
    as_prompt = _forward(model, _embed(model, text_ids), input_ids, target_ids)
    as_tokens = _forward(model, np.zeros((0, model.d_model)), text_ids + input_ids, target_ids)
    np.testing.assert_allclose(as_prompt, as_tokens, atol=1e-4, rtol=1e-4)
    assert np.abs(as_prompt).max() > 0.1                       # real logits, not a trivially equal pair


@pytest.mark.parametrize("model_name", MODELS)
def test_multi_prompt_forward_equals_separate_forwards(model_name, request):
    model = request.getfixturevalue(model_name)
    prompts = [SoftPrompt.init(model, length=n, seed=n).embeddings for n in (3, 6, 4)]
    table = stack_prompts(prompts)
    inputs = [model.ops.format_input(model.tokenizer.encode(t)) for t in
              ("the plot is thin", "an utterly charming and hilarious film", "dull")]
    target = model.ops.format_target(model.tokenizer.encode("negative"))
    rows = [(0, 0), (1, 1), (2, 2), (0, 1), (2, 1)]  # (input, prompt): lengths differ both ways
    length = max(len(x) for x in inputs)
    input_ids = np.zeros((len(rows), length), np.int32)
    input_mask = np.zeros((len(rows), length), bool)
    for r, (i, _) in enumerate(rows):
        input_ids[r, : len(inputs[i])], input_mask[r, : len(inputs[i])] = inputs[i], True
    index = jnp.asarray([p for _, p in rows])
    together = np.asarray(_logits(
        model, prompts=table.embeddings[index], prompt_mask=table.mask[index],
        input_ids=jnp.asarray(input_ids), input_mask=jnp.asarray(input_mask),
        target_ids=jnp.asarray([target] * len(rows)), target_mask=jnp.ones((len(rows), len(target)), bool)))
    for r, (i, p) in enumerate(rows):
        alone = _forward(model, prompts[p], inputs[i], target)
        np.testing.assert_allclose(together[r], alone, atol=2e-4, rtol=1e-4)
    assert not np.allclose(together[0], together[3], atol=1e-2)   # one input, two prompts: the prompt counts
