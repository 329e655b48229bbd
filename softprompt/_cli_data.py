"""`softprompt data`: task data in other formats (a TFDS dataset prepared offline from JSONL)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._cli_common import print_json, user_errors

app = typer.Typer(help="Task data: prepare a task's records as a TFDS dataset.",
                  no_args_is_help=True, rich_markup_mode=None)


@app.command("prepare-tfds")
def prepare_tfds(
    task: str = typer.Option(..., help="Built-in task name or path of a task YAML file."),
    out: Path = typer.Option(..., help="TFDS data folder to write into (pass it as --data-dir later)."),
    data_dir: Optional[str] = typer.Option(None, help="JSONL data folder [default: $SOFTPROMPT_DATA_DIR, then shipped data]."),
    split: list[str] = typer.Option(["train", "validation"], help="Splits to prepare (repeat the option)."),
) -> None:
    """Write a task's records as a TFDS dataset (array_record, file order kept; no download, no
    TensorFlow); prints the dataset's name and the options that train and evaluate from it."""
    from softprompt.core.tasks.tfds_prepare import prepare_tfds as prepare

    with user_errors():
        name = prepare(task, out_dir=out, data_dir=data_dir, splits=split)
    print_json({"tfds_name": name, "data_dir": str(out.resolve()),
                "use": f"--data-source tfds:{name} --data-dir {out.resolve()}"})
