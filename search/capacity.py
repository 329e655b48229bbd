"""Refusing at launch a campaign whose trials cannot fit on the devices it asks for: when its
`resources.device` names a device kind (`core/devices.py`), the planner (`core/planner.py`) sizes
the largest trial — or the fused step of `fuse.max_trials` trials — from the model's config, with
no weights loaded, and compares the devices it needs with those a trial (or the step server) gets."""

from __future__ import annotations

import math
from typing import Any

from softprompt.core.config import TrainConfig

from . import space as space_lib
from .campaign import Campaign, CampaignError


def largest(campaign: Campaign, name: str) -> Any:
    """The largest value of a trial setting over the campaign (fixed, searched, or the default)."""
    if name in campaign.fixed:
        return campaign.fixed[name]
    axis = campaign.axes().get(name)
    return space_lib.max_value(axis) if axis else getattr(TrainConfig, name)


def devices_given(campaign: Campaign) -> int:
    """Devices one trial's step runs on: the step server's GPUs when fused, else the trial's own
    (at least one: a CPU or a GPU fraction is one device)."""
    gpus = campaign.step_server_gpus() if campaign.fused() else campaign.resources.gpu
    return max(1, math.floor(gpus), campaign.resources.tpu)


def check_plan(campaign: Campaign):
    """The plan of the campaign's largest step, or a CampaignError on `resources` giving the
    plan's numbers when it needs more devices than it gets. None: no `resources.device` set, or a
    model the planner cannot read (a .gguf file)."""
    from softprompt.core.abstract_models import read_config
    from softprompt.core.planner import RunShape, plan, plan_dtype
    from softprompt.core.tasks import get_task

    if campaign.resources.device is None:
        return None
    try:
        name, config = read_config(campaign.model)
    except FileNotFoundError:
        return None
    max_length = max(get_task(task, source=campaign.data_source).max_input_tokens for task in campaign.tasks)
    trials = campaign.fuse.max_trials if campaign.fused() else 1
    shape = RunShape(int(largest(campaign, "batch_size")), int(largest(campaign, "prompt_length")),
                     max_length, 8, trials, plan_dtype(campaign.dtype, campaign.resources.device))
    given = devices_given(campaign)
    try:
        planned = plan(config, shape, campaign.resources.device, name=name, steps=campaign.max_steps())
    except ValueError as error:
        raise CampaignError("resources.device", str(error)) from error
    if not planned.fits or planned.devices_needed > given:
        raise CampaignError("resources", (
            f"the plan for {name} ({shape.rows} rows of {shape.max_length} tokens, prompt {shape.prompt_length}, "
            f"{shape.dtype}) needs {planned.devices_needed} x {campaign.resources.device} (mesh {planned.mesh}, "
            f"{planned.bytes_per_device / 2**30:.1f} GiB each); a trial gets {given}: ask for gpu: "
            f"{planned.devices_needed} (`softprompt model plan` shows the numbers)"))
    return planned
