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


@app.command("plan")
def plan(model: str = typer.Option(DEFAULT_MODEL, help="config.json, a folder holding one, or a built-in name."),
         batch_size: int = typer.Option(32, min=1, help="Rows per trial and step."),
         prompt_length: int = typer.Option(100, min=1, help="Soft-prompt length."),
         max_length: int = typer.Option(256, min=1, help="Input tokens per row."),
         target_length: int = typer.Option(8, min=1, help="Target tokens per row."),
         device: str = typer.Option("h100", help="h100, h200, a100-80g, l4, tpu-v5e or cpu."),
         dtype: str = typer.Option("auto", help="Frozen weights: float32, bfloat16 or auto."),
         trials: int = typer.Option(1, min=1, help="Trials fused into one step."),
         steps: int = typer.Option(30_000, min=1, help="Steps per trial (--campaign: its own)."),
         campaign: str = typer.Option(None, help="Campaign file: its steps and trial count."),
         sharding: str = typer.Option("fsdp", help="Weight split: fsdp or tensor.")) -> None:
    """Memory, devices and time of a run, from the config alone (no weights loaded)."""
    from softprompt.core.abstract_models import read_config
    from softprompt.core.planner import RunShape, plan as make_plan, plan_dtype

    with user_errors():
        name, config = read_config(model)
        total = None
        if campaign:
            from softprompt.search.campaign import load_campaign
            loaded = load_campaign(campaign)
            steps, total = loaded.max_steps(), loaded.num_samples * len(loaded.tasks) * loaded.seeds
        dtype = plan_dtype(dtype, device)
        shape = RunShape(batch_size, prompt_length, max_length, target_length, trials, dtype)
        result = make_plan(config, shape, device, name=name, steps=steps, trials_total=total, strategy=sharding)
    size = lambda n: f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
    for label, value in (("model", f"{result.model} ({result.family}, {result.params:,} params)"),
                         ("frozen weights", f"{size(result.frozen_bytes)} {dtype}"),
                         ("device", f"{device}, mesh {result.mesh} (data x model), {result.devices_needed} devices"
                                    + ("" if result.fits else " - does NOT fit")),
                         ("per device", f"{size(result.bytes_per_device)}"),
                         ("step", f"{result.step_flops:.3g} FLOP, {result.projected_step_s:.3g} s projected"
                                  + ("" if result.traced else " (estimated by formula)")),
                         ("campaign", f"{result.projected_campaign_h:.2f} h projected")):
        typer.echo(f"{label:>15}  {value}")
    print_json(result.to_dict())
