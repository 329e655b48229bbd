"""`softprompt train`, `evaluate` and `explain`: one prompt-tuning trial and its analysis."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._cli_common import print_json, user_errors


def train(
    task: str = typer.Option(..., help="Built-in task name or path of a task YAML file."),
    model: str = typer.Option("t5-tiny-random", help="Built-in model name, .gguf file or HF directory."),
    out: Path = typer.Option(..., help="Folder for prompt.safetensors + prompt.json (the best prompt)."),
    data_dir: Optional[str] = typer.Option(None, help="JSONL data folder [default: $SOFTPROMPT_DATA_DIR, then shipped data]."),
    data_source: str = typer.Option("jsonl", help="jsonl | tfds (the task's TFDS dataset) | tfds:NAME "
                                    "(e.g. one made by `softprompt data prepare-tfds`); --data-dir is then TFDS's folder."),
    prompt_length: int = typer.Option(20, min=1),
    init: str = typer.Option("class_labels", help="random_uniform | sampled_vocab | class_labels | from_text | from_file"),
    init_text: Optional[str] = typer.Option(None, help="Text for --init from_text."),
    init_path: Optional[Path] = typer.Option(None, help="Prompt folder for --init from_file."),
    steps: int = typer.Option(300, min=1),
    batch_size: int = typer.Option(8, min=1),
    learning_rate: float = typer.Option(0.3),
    parameter_scaling: bool = typer.Option(False, help="Adafactor parameter scaling (Table 6)."),
    warmup_steps: int = typer.Option(0, min=0),
    decay_factor: Optional[float] = typer.Option(None),
    steps_per_decay: Optional[int] = typer.Option(None),
    eval_every: int = typer.Option(100, min=1),
    max_eval_examples: Optional[int] = typer.Option(None, min=1),
    target_format: str = typer.Option("plain", help="plain | sentinel (T5 only)."),
    dtype: str = typer.Option("float32", help="Frozen weights: float32 or bfloat16."),
    seed: int = typer.Option(0),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="[default: OUT/checkpoints]; resumed from when present."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
    model_axis: Optional[int] = typer.Option(None, min=1, help="Devices the weights are split over."),
    sharding: Optional[str] = typer.Option(None, help="Weight split: fsdp or tensor."),
) -> None:
    """Tune a soft prompt on a task with the model frozen; the last stdout line is JSON."""
    from softprompt.core.config import TrainConfig
    from softprompt.core.sharding import default_placement
    from softprompt.core.train import train as run_training

    with user_errors():
        config = TrainConfig(
            task=task, model=model, dtype=dtype, data_dir=data_dir, data_source=data_source,
            prompt_length=prompt_length, init=init,
            init_text=init_text, init_path=str(init_path) if init_path else None, target_format=target_format,
            learning_rate=learning_rate, parameter_scaling=parameter_scaling, batch_size=batch_size,
            steps=steps, warmup_steps=warmup_steps, decay_factor=decay_factor, steps_per_decay=steps_per_decay,
            eval_every=eval_every, max_eval_examples=max_eval_examples, seed=seed)
        placement = default_placement(batch_size, model_axis=model_axis, strategy=sharding)
        result = run_training(config, out_dir=out, checkpoint_dir=checkpoint_dir or out / "checkpoints",
                              progress=progress, placement=placement)
    print_json({"best_step": result.prompt.step, "best_metrics": dict(result.prompt.metrics),
                "steps": result.steps, "out": str(out)})


def evaluate(
    task: str = typer.Option(..., help="Built-in task name or path of a task YAML file."),
    prompt: Optional[Path] = typer.Option(None, help="A prompt artifact folder."),
    model: Optional[str] = typer.Option(None, help="[default: the prompt's model]"),
    split: str = typer.Option("validation"),
    max_examples: Optional[int] = typer.Option(None, min=1),
    data_dir: Optional[str] = typer.Option(None),
    data_source: str = typer.Option("jsonl", help="jsonl | tfds (the task's TFDS dataset) | tfds:NAME "
                                    "(e.g. one made by `softprompt data prepare-tfds`); --data-dir is then TFDS's folder."),
    text_prompt: Optional[str] = typer.Option(None, help="A designed text prompt, e.g. 'Review: {sentence}\\nSentiment:'."),
    shots: int = typer.Option(0, min=0, help="With --text-prompt: training examples shown first."),
    seed: int = typer.Option(0, help="With --shots: which training examples are drawn."),
) -> None:
    """Score a tuned prompt (or a designed text prompt) on a task; prints one JSON object."""
    from softprompt.core import api

    with user_errors():
        if text_prompt is not None:
            metrics = api.evaluate_text_prompt(task=task, model=model or "t5-tiny-random", template=text_prompt,
                                               shots=shots, seed=seed, split=split, max_examples=max_examples,
                                               data_dir=data_dir, data_source=data_source)
        else:
            if prompt is None:
                raise ValueError("give --prompt DIR (a tuned prompt) or --text-prompt TEMPLATE")
            metrics = api.evaluate(prompt, task=task, model=model, split=split, max_examples=max_examples,
                                   data_dir=data_dir, data_source=data_source)
    print_json(metrics)


def explain(prompt: Path = typer.Option(..., help="A prompt artifact folder."),
            top_k: int = typer.Option(5, min=1),
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
