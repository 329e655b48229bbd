"""`softprompt model ...`: facts about a frozen model."""

from __future__ import annotations

import typer

from ._cli_common import DEFAULT_MODEL, DTYPE_HELP, MODEL_HELP, print_json, user_errors

app = typer.Typer(help="Inspect frozen models.",
                  no_args_is_help=True, rich_markup_mode=None)


@app.command("info")
def info(model: str = typer.Option(DEFAULT_MODEL, help=MODEL_HELP + " Or a config.json alone."),
         prompt_length: int = typer.Option(20, min=1, help="Soft-prompt positions to count."),
         dtype: str = typer.Option("auto", help=DTYPE_HELP)) -> None:
    """Parameter counts with a prompt of the given length (the paper's Table 4) and the fingerprint.
    From a config.json alone (no weights): the counts and the weights' bytes at each dtype."""
    from pathlib import Path

    from softprompt.core.models import load_model

    if Path(model).name == "config.json" and Path(model).is_file():
        from softprompt.core.models.footprint import config_footprint
        with user_errors():
            print_json(config_footprint(model, prompt_length=prompt_length))
        return
    with user_errors():
        frozen = load_model(model, dtype=dtype)
    trainable = prompt_length * frozen.d_model
    total = frozen.num_params + trainable
    print_json({"model": frozen.name, "family": frozen.family, "d_model": frozen.d_model,
                "frozen_params": frozen.num_params, "trainable_params": trainable,
                "total_params": total, "percent_trainable": 100.0 * trainable / total,
                "fingerprint": frozen.fingerprint})
