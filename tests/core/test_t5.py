"""T5 family: golden logits against `transformers`' PyTorch T5; loading; tokenizer; t5-tiny-random."""

from __future__ import annotations

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softprompt.core.models.t5_loading import CheckpointError, SentencePieceTokenizer, load_t5
from softprompt.core.models.tiny_t5 import build_t5_tiny_random, load_t5_tiny_random

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=2128, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
             num_decoder_layers=3, relative_attention_num_buckets=16,
             relative_attention_max_distance=12,  # short sequences reach the log-spaced buckets
             dropout_rate=0.0, decoder_start_token_id=0)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("softprompt_home")
        patch.setenv("SOFTPROMPT_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def tiny_dir(home):
    return build_t5_tiny_random()


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_t5_tiny_random()


def save_hf_t5(directory, spiece, *, gated: bool, tied: bool, max_shard_size=None, hub_config=True):
    """A random `transformers` T5 saved in Hugging Face format. `hub_config`: config.json as the hub's
    checkpoints have it (T5 1.1: `tie_word_embeddings: false`, no `scale_decoder_outputs`), else as
    transformers 5 writes it (`tie_word_embeddings: true`, `scale_decoder_outputs: false`)."""
    torch.manual_seed(0)
    config = transformers.T5Config(**SMALL, feed_forward_proj="gated-gelu" if gated else "relu",
                                   tie_word_embeddings=tied)
    model = transformers.T5ForConditionalGeneration(config).eval()
    if not tied:  # transformers 5 ties lm_head at construction; T5 1.1 has its own head
        head = torch.randn(SMALL["vocab_size"], SMALL["d_model"]) * 0.2
        model.lm_head.weight = torch.nn.Parameter(head)
        model.config.tie_word_embeddings = False
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(directory, **kwargs)
    if hub_config:
        hf_config = json.loads((directory / "config.json").read_text())
        del hf_config["scale_decoder_outputs"]
        (directory / "config.json").write_text(json.dumps(hf_config))
    shutil.copy(spiece, directory / "spiece.model")
    return model


def batch(vocab_size: int, d_model: int, seed: int = 0) -> dict:
    """3 rows of a 4-long prompt, then inputs and targets of different lengths, right-padded."""
    rng = np.random.default_rng(seed)
    input_lengths, target_lengths, P, L, T = [9, 5, 7], [4, 2, 3], 4, 9, 4
    mask = lambda lengths, n: np.arange(n)[None] < np.array(lengths)[:, None]
    input_mask, target_mask = mask(input_lengths, L), mask(target_lengths, T)
    return dict(
        prompts=rng.uniform(-0.5, 0.5, (3, P, d_model)).astype(np.float32),
        prompt_mask=np.ones((3, P), bool),
        input_ids=np.where(input_mask, rng.integers(3, vocab_size, (3, L)), 0).astype(np.int32),
        input_mask=input_mask,
        target_ids=np.where(target_mask, rng.integers(3, vocab_size, (3, T)), 0).astype(np.int32),
        target_mask=target_mask)


def torch_logits(model, b) -> np.ndarray:
    """The same computation through transformers: prompt embeddings prepended as inputs_embeds."""
    t = {k: torch.as_tensor(v) for k, v in b.items()}
    embeds = torch.cat([t["prompts"], model.shared(t["input_ids"].long())], dim=1)
    with torch.no_grad():
        out = model(inputs_embeds=embeds,
                    attention_mask=torch.cat([t["prompt_mask"], t["input_mask"]], 1).long(),
                    decoder_input_ids=model._shift_right(t["target_ids"].long()))
    return out.logits.numpy()


@functools.partial(jax.jit, static_argnums=0)  # T5Ops is hashable: equal models share compilations
def _target_logits(ops, params, b):
    return ops.target_logits(params, **b)


def jax_logits(frozen, b) -> np.ndarray:
    return np.asarray(_target_logits(frozen.ops, frozen.params, b))


@pytest.mark.parametrize("gated, tied, hub_config", [(True, False, True), (False, True, True),
                                                     (True, False, False)],
                         ids=["t5.1.1", "t5-original", "t5.1.1-transformers5-config"])
def test_logits_match_transformers(tmp_path, tiny_dir, gated, tied, hub_config):
    model = save_hf_t5(tmp_path, tiny_dir / "spiece.model", gated=gated, tied=tied,
                       hub_config=hub_config)
    frozen = load_t5(tmp_path)
    assert frozen.config["tie_word_embeddings"] == frozen.config["scale_decoder_outputs"] == tied
    b = batch(SMALL["vocab_size"], SMALL["d_model"])
    ours, theirs = jax_logits(frozen, b), torch_logits(model, b)
    assert ours.shape == theirs.shape == (3, 4, SMALL["vocab_size"]) and ours.dtype == np.float32
    valid = b["target_mask"]
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4, rtol=1e-4)


def test_tiny_model_matches_transformers(tiny_dir, tiny):
    model = transformers.T5ForConditionalGeneration.from_pretrained(tiny_dir).eval()
    frozen = tiny
    assert not frozen.config["tie_word_embeddings"] and frozen.d_model == 64
    b = batch(frozen.tokenizer.vocab_size, frozen.d_model, seed=1)
    valid = b["target_mask"]
    np.testing.assert_allclose(jax_logits(frozen, b)[valid], torch_logits(model, b)[valid],
                               atol=1e-4, rtol=1e-4)


def insert_padding(row: dict, where: dict) -> dict:
    """Row 0 of `row`, each sequence padded with masked junk at the given indices."""
    padded = {}
    for name in ("prompt", "input", "target"):
        values = row[f"{name}s" if name == "prompt" else f"{name}_ids"][0]
        mask = np.ones(len(values), bool)
        for index in where[name]:
            values = np.insert(values, index, np.full_like(values[0], 7), axis=0)  # masked junk
            mask = np.insert(mask, index, False)
        padded.update({f"{name}s" if name == "prompt" else f"{name}_ids": values[None],
                       f"{name}_mask": mask[None]})
    return padded


def test_padding_anywhere_gives_the_same_logits(tiny):
    """The base.py contract: positions come from the masks, wherever the padding sits."""
    frozen = tiny
    alone = {k: v[:1] for k, v in batch(frozen.tokenizer.vocab_size, frozen.d_model).items()}
    alone = {k: v[:, :3] if k.startswith("prompt") else v for k, v in alone.items()}
    padded = insert_padding(alone, {"prompt": [1, 3], "input": [0, 5], "target": [0, 2, 2]})
    expected = jax_logits(frozen, alone)[0]
    got = jax_logits(frozen, padded)[0][padded["target_mask"][0]]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_gradient_reaches_the_prompt_only_where_unmasked(tiny):
    frozen = tiny
    b = batch(frozen.tokenizer.vocab_size, frozen.d_model)
    b["prompt_mask"][1, -1] = False

    def loss(prompts):
        logits = frozen.ops.target_logits(frozen.params, **{**b, "prompts": prompts})
        log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), b["target_ids"][..., None], -1)
        return -(log_probs[..., 0] * b["target_mask"]).sum()

    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(b["prompts"])))
    assert grad.shape == b["prompts"].shape and np.isfinite(grad).all()
    assert np.abs(grad[1, -1]).max() == 0 and np.abs(grad[1, :-1]).min() > 0


def test_bfloat16_weights(tiny):
    f32, bf16 = tiny, load_t5_tiny_random(dtype="bfloat16")
    assert bf16.fingerprint != f32.fingerprint  # the dtype is part of the model a prompt was trained on
    assert jax.tree.leaves(bf16.params)[0].dtype == jnp.bfloat16
    b = batch(f32.tokenizer.vocab_size, f32.d_model)
    low, full = jax_logits(bf16, b), jax_logits(f32, b)
    assert low.dtype == np.float32
    assert np.abs(low - full).max() < 0.05 * np.abs(full).max()


def test_sharded_checkpoint_loads(tmp_path, tiny_dir):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    save_hf_t5(single, tiny_dir / "spiece.model", gated=True, tied=False)
    save_hf_t5(sharded, tiny_dir / "spiece.model", gated=True, tied=False, max_shard_size="40KB")
    assert not (sharded / "model.safetensors").exists()
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 2
    one, many = load_t5(single), load_t5(sharded)
    assert one.fingerprint == many.fingerprint
    b = batch(SMALL["vocab_size"], SMALL["d_model"])
    np.testing.assert_array_equal(jax_logits(one, b), jax_logits(many, b))


def test_tiny_build_is_deterministic(tmp_path, monkeypatch):
    built = []
    for home in ("a", "b"):
        monkeypatch.setenv("SOFTPROMPT_HOME", str(tmp_path / home))
        built.append((build_t5_tiny_random(), load_t5_tiny_random().fingerprint))
    (first, fingerprint_a), (second, fingerprint_b) = built
    assert first != second and fingerprint_a == fingerprint_b
    for name in ("config.json", "model.safetensors", "spiece.model"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_tokenizer(tiny_dir):
    tok = SentencePieceTokenizer(tiny_dir / "spiece.model")
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.vocab_size) == (0, 1, None, 2100)
    text = "The movie was great, not_entailment."
    assert tok.decode(tok.encode(text)) == text
    assert tok.sentinel_id(0) == 2099 and tok.sentinel_id(99) == 2000
    with pytest.raises(ValueError):
        tok.sentinel_id(100)
    special = "<extra_id_0> positive<extra_id_100></s><pad>"          # typed text, not special tokens
    ids = tok.encode(special)
    assert max(ids) < tok.num_pieces and tok.eos_id not in ids and tok.pad_id not in ids
    assert tok.decode([tok.sentinel_id(0)] + tok.encode("positive") + [tok.eos_id, tok.pad_id]) == "positive"
    for label in ("entailment", "positive", "negative", "True", "False", "neutral", "contradiction"):
        assert len(tok.encode(label)) == 1, label  # the shipped corpus makes labels whole pieces
    ordinary = tok.ordinary_ids()
    assert ordinary[0] == 3 and ordinary[-1] == 1999 and np.all(np.diff(ordinary) > 0)


def test_tokenizer_matches_transformers(tiny_dir):
    reference = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    tok = SentencePieceTokenizer(tiny_dir / "spiece.model")
    for text in ["Hello world!", "  spaces   and\ttabs ", "naïve café — 42%",
                 "premise: It rained. hypothesis: The grass is wet."]:
        assert tok.encode(text) == reference(text, add_special_tokens=False).input_ids, text
    # Hugging Face turns typed "<extra_id_7>" into the sentinel; softprompt keeps typed text text
    assert max(tok.encode("<extra_id_0> entailment <extra_id_7>")) < tok.num_pieces


MISSING = {"no_weights": "model.safetensors", "no_spiece": "spiece.model", "no_config": "config.json"}


@pytest.mark.parametrize("damage", ["truncated", "garbage", *MISSING])
def test_damaged_checkpoint_gives_clear_error(tmp_path, tiny_dir, damage):
    directory = shutil.copytree(tiny_dir, tmp_path / "t5")
    weights = directory / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif damage == "garbage":
        weights.write_bytes(b"not a safetensors file at all")
    else:
        (directory / MISSING[damage]).unlink()
    with pytest.raises(CheckpointError, match=MISSING.get(damage, "model.safetensors")) as error:
        load_t5(directory)
    assert isinstance(error.value, ValueError)
