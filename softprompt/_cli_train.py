"""`softprompt train`, `evaluate` and `explain`: one prompt-tuning trial and its analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._cli_common import (DATA_DIR_HELP, DEFAULT_MODEL, DTYPE_HELP, MODEL_HELP, open_store, print_json,
                          store_option, user_errors)


def train(
    task: str = typer.Option(..., help="Built-in task name or task YAML file."),
    model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP),
    out: Path = typer.Option(..., help="Folder for the best prompt (safetensors + json)."),
    data_dir: Optional[str] = typer.Option(None, help=DATA_DIR_HELP),
    data_source: str = typer.Option("jsonl", help="jsonl | tfds | tfds:NAME (docs/tasks.md)."),
    prompt_length: int = typer.Option(20, min=1, help="Soft-prompt positions."),
    init: Optional[str] = typer.Option(None, help="class_labels | sampled_vocab | random_uniform | "
                                                  "from_text | from_file [default: class_labels]"),
    init_text: Optional[str] = typer.Option(None, help="Text for --init from_text."),
    init_path: Optional[Path] = typer.Option(None, help="Prompt folder for --init from_file."),
    init_from: Optional[str] = typer.Option(None, metavar="ENSEMBLE[#K]|DIR",
                                            help="Start from a registered prompt (best member, or #K)."),
    reparam: str = typer.Option("none", help="none | residual (P + MLP(P), folded at export)."),
    reparam_bottleneck: int = typer.Option(64, min=1, help="Hidden width of the residual MLP."),
    steps: int = typer.Option(300, min=1, help="Training steps."),
    batch_size: int = typer.Option(8, min=1, help="Examples per step."),
    learning_rate: float = typer.Option(0.3, help="Adafactor learning rate."),
    parameter_scaling: bool = typer.Option(False, help="Adafactor parameter scaling."),
    warmup_steps: int = typer.Option(0, min=0, help="Linear warmup steps (0: off)."),
    decay_factor: Optional[float] = typer.Option(None, help="Multiply the rate by it every..."),
    steps_per_decay: Optional[int] = typer.Option(None, help="...this many steps."),
    eval_every: int = typer.Option(100, min=1, help="Evaluate (and keep the best) every N steps."),
    max_examples: Optional[int] = typer.Option(None, min=1, help="Evaluate on at most N examples."),
    target_format: str = typer.Option("plain", help="plain | sentinel (T5 only)."),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
    seed: int = typer.Option(0, help="Seed of the init and the data order."),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="[default: OUT/checkpoints] (resumed)."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
    store: Optional[str] = store_option(),
) -> None:
    """Tune a soft prompt on a task with the model frozen; the last stdout line is JSON."""
    from softprompt.core.config import TrainConfig
    from softprompt.core.train import train as run_training

    with user_errors():
        init, init_path, source = _initial_prompt(init, init_path, init_from, out=out, store=store)
        config = TrainConfig(
            task=task, model=model, dtype=dtype, data_dir=data_dir, data_source=data_source,
            prompt_length=prompt_length, init=init,
            init_text=init_text, init_path=str(init_path) if init_path else None, target_format=target_format,
            reparam=reparam, reparam_bottleneck=reparam_bottleneck,
            learning_rate=learning_rate, parameter_scaling=parameter_scaling, batch_size=batch_size,
            steps=steps, warmup_steps=warmup_steps, decay_factor=decay_factor, steps_per_decay=steps_per_decay,
            eval_every=eval_every, max_eval_examples=max_examples, seed=seed)
        result = run_training(config, out_dir=out, checkpoint_dir=checkpoint_dir or out / "checkpoints",
                              progress=progress)
    print_json({"best_step": result.prompt.step, "best_metrics": dict(result.prompt.metrics),
                "steps": result.steps, "out": str(out)} | ({"init_from": source} if source else {}))


INIT_SUFFIX = ".init"   # OUT.init beside OUT (saving OUT replaces it whole): the registered prompt it started from


def _initial_prompt(init: str | None, init_path: Path | None, init_from: str | None, *, out: Path,
                    store: str | None) -> tuple[str, Path | None, str | None]:
    """(init, init_path, what --init-from named) — a registry reference is downloaded as the folder
    OUT.init and handed to training as `from_file` (core never reads the registry); the same path
    each time, so a rerun resumes its checkpoint."""
    if init_from is None:
        return init or "class_labels", init_path, None
    if init not in (None, "from_file") or init_path is not None:
        raise ValueError("--init-from sets the init: give it without --init/--init-path")
    if Path(init_from).is_dir():
        return "from_file", Path(init_from), str(Path(init_from))
    from softprompt.store import fetch_init_prompt

    folder, source = fetch_init_prompt(open_store(store), init_from, out.with_name(out.name + INIT_SUFFIX))
    return "from_file", folder, source


def evaluate(
    task: str = typer.Option(..., help="Built-in task name or task YAML file."),
    prompt: Optional[Path] = typer.Option(None, help="A prompt folder (from train)."),
    model: Optional[str] = typer.Option(None, help=f"[default: the prompt's, else {DEFAULT_MODEL}]"),
    split: str = typer.Option("validation", help="Split to score, e.g. 'validation[:500]'."),
    max_examples: Optional[int] = typer.Option(None, min=1, help="Score the first N examples."),
    data_dir: Optional[str] = typer.Option(None, help=DATA_DIR_HELP),
    data_source: str = typer.Option("jsonl", help="jsonl | tfds | tfds:NAME (docs/tasks.md)."),
    text_prompt: Optional[str] = typer.Option(None, help="A designed prompt, e.g. 'Review: {sentence}'."),
    shots: int = typer.Option(0, min=0, help="With --text-prompt: examples shown first."),
    seed: int = typer.Option(0, help="With --shots: which examples are drawn."),
) -> None:
    """Score a tuned prompt (or a designed text prompt) on a task; prints one JSON object."""
    from softprompt.core import api

    with user_errors():
        if text_prompt is not None:
            metrics = api.evaluate_text_prompt(task=task, model=model or DEFAULT_MODEL, template=text_prompt,
                                               shots=shots, seed=seed, split=split, max_examples=max_examples,
                                               data_dir=data_dir, data_source=data_source)
        else:
            if prompt is None:
                raise ValueError("give --prompt DIR (a tuned prompt) or --text-prompt TEMPLATE")
            metrics = api.evaluate(prompt, task=task, model=model, split=split, max_examples=max_examples,
                                   data_dir=data_dir, data_source=data_source)
    print_json(metrics)


def explain(prompt: Path = typer.Option(..., help="A prompt folder (from train)."),
            top_k: int = typer.Option(5, min=1, help="Neighbours per position."),
            model: Optional[str] = typer.Option(None, help="[default: the prompt's model]")) -> None:
    """The top-k vocabulary neighbours of each prompt position by cosine similarity (paper §7)."""
    from rich.console import Console
    from rich.table import Table

    from softprompt.core import api

    with user_errors():
        rows = api.explain(prompt, top_k=top_k, model=model)
    table = Table("position", *[f"#{k + 1}" for k in range(top_k)], title=f"nearest tokens of {prompt}")
    for position, neighbours in enumerate(rows):
        table.add_row(str(position), *[f"{n.token!r} {n.cosine:.2f}" for n in neighbours])
    Console(stderr=True).print(table)
    print_json({"prompt": str(prompt), "positions": [
        [{"token_id": n.token_id, "token": n.token, "cosine": n.cosine} for n in neighbours] for neighbours in rows]})
