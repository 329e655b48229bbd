"""The `softprompt` command line, end to end on t5-tiny-random and on a tiny Qwen3 Hugging Face folder
(and the real model when marked slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from softprompt.cli import app

runner = CliRunner()
BIN = Path(sys.executable).parent / "softprompt"


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("model", "train", "evaluate", "explain"):
        assert command in result.output
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, path + (name,))


def test_every_help_reads_well_at_80_columns():
    """Click's conventions (TEXT, INTEGER, NAME), defaults shown, nothing past column 80."""
    import click.testing
    import typer.main

    from softprompt.cli import conventional

    command = conventional(typer.main.get_command(app))
    for path, _ in _commands(command):
        result = click.testing.CliRunner().invoke(command, [*path, "--help"], terminal_width=80)
        assert result.exit_code == 0, path
        text = result.output
        assert max(map(len, text.splitlines())) <= 80, (path, text)
        assert "<str>" not in text and "<int" not in text and "{" not in text.split("\n")[0], (path, text)
    launch = click.testing.CliRunner().invoke(command, ["search", "launch", "--help"], terminal_width=80).output
    assert "search launch [OPTIONS] CAMPAIGN_FILE" in launch
    assert "--store DIR|URI" in launch and "$MLFLOW_TRACKING_URI" in launch


def test_model_info_counts_the_prompt(tiny_model):
    result = runner.invoke(app, ["model", "info", "--model", "t5-tiny-random", "--prompt-length", "100",
                                 "--dtype", "float32"])
    info = _last_json(result.output)
    assert info["trainable_params"] == 100 * tiny_model.d_model
    assert info["total_params"] == tiny_model.num_params + info["trainable_params"]
    assert info["fingerprint"] == tiny_model.fingerprint


@pytest.mark.slow
def test_model_info_on_gemma_is_the_papers_table_4():
    result = runner.invoke(app, ["model", "info", "--model", "gemma3-270m", "--prompt-length", "100"])
    info = _last_json(result.output)
    assert info["frozen_params"] == 268_098_176
    assert info["trainable_params"] == 64_000
    assert info["total_params"] == 268_098_176 + 64_000
    assert info["percent_trainable"] == pytest.approx(100 * 64_000 / 268_162_176)


def test_train_evaluate_explain_end_to_end(tmp_path, decoder_folder):
    """On a tiny Qwen3 given as a relative folder path: the prompt records it absolute, so evaluate and
    explain find it from another working directory; the tiny Llama refuses the prompt in one line."""
    out = tmp_path / "prompt"
    qwen3 = decoder_folder("qwen3")
    trained = subprocess.run(
        [str(BIN), "train", "--task", "rte", "--model", qwen3.name, "--steps", "6",
         "--batch-size", "4", "--eval-every", "3", "--max-examples", "8", "--prompt-length", "5",
         "--out", str(out)], capture_output=True, text=True, timeout=300, env=os.environ | {"JAX_PLATFORMS": "cpu"},
        cwd=qwen3.parent)
    assert trained.returncode == 0, trained.stderr
    summary = _last_json(trained.stdout)
    assert summary["steps"] == 6 and summary["best_step"] in (3, 6)
    assert "train step 3/6" in trained.stdout and "train step 6/6" in trained.stdout  # no terminal: a line per evaluation
    assert (out / "prompt.safetensors").exists() and (out / "prompt.json").exists()
    assert json.loads((out / "prompt.json").read_text())["hyperparameters"]["model"] == str(qwen3.resolve())

    evaluated = runner.invoke(app, ["evaluate", "--prompt", str(out), "--task", "rte", "--max-examples", "8"])
    assert evaluated.exit_code == 0, evaluated.output
    assert _last_json(evaluated.output) == summary["best_metrics"]  # the same prompt scores the same

    explained = runner.invoke(app, ["explain", "--prompt", str(out), "--top-k", "3"])
    positions = _last_json(explained.output)["positions"]
    assert len(positions) == 5 and all(len(p) == 3 for p in positions)
    assert all(p[0]["cosine"] >= p[1]["cosine"] >= p[2]["cosine"] for p in positions)

    transfer = runner.invoke(app, ["evaluate", "--prompt", str(out), "--task", "glue_rte", "--max-examples", "8"])
    assert transfer.exit_code == 0 and "accuracy" in _last_json(transfer.output)

    llama = str(decoder_folder("llama"))   # the same d_model: only the fingerprint tells them apart
    refused = runner.invoke(app, ["evaluate", "--prompt", str(out), "--task", "rte", "--model", llama])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    [line] = [line for line in refused.output.splitlines() if line.strip()]
    assert "prompt was trained on a model with fingerprint" in line and llama in line


def test_designed_text_prompt_is_scored(tiny_model):
    result = runner.invoke(app, ["evaluate", "--task", "sst2", "--model", "t5-tiny-random", "--text-prompt",
                                 "Review: {sentence}\\nSentiment:", "--shots", "2", "--max-examples", "10"])
    assert result.exit_code == 0, result.output
    assert 0 <= _last_json(result.output)["accuracy"] <= 100


@pytest.mark.parametrize("args, message", [
    (["train", "--task", "nope", "--out", "x"], "unknown task 'nope'"),
    (["evaluate", "--task", "sst2", "--model", "t5-tiny-random", "--text-prompt", "{review}"], "review"),
    (["model", "info", "--model", "no-such-model"], "unknown model"),
])
def test_bad_input_is_a_clear_error(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_prompt_from_another_model_is_refused(tmp_path, tiny_model):
    from softprompt.core.prompts import SoftPrompt

    SoftPrompt.init(tiny_model, length=3).replace(model_fingerprint="f" * 64).save(tmp_path / "p")
    result = runner.invoke(app, ["evaluate", "--prompt", str(tmp_path / "p"), "--task", "rte"])
    assert result.exit_code == 2 and "fingerprint" in result.output
