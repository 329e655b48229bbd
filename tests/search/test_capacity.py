"""A campaign that names its device kind is planned at launch (search/capacity.py): one whose
trials cannot fit on the devices they ask for is refused with the plan's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from softprompt.search.campaign import CampaignError, parse_campaign
from softprompt.search.capacity import check_plan
from softprompt.search.launch import launch

LLAMA = str(Path(__file__).resolve().parents[2] / "examples" / "models" / "llama-3.1-8b")


def _campaign(tmp_path, **resources) -> dict:
    return parse_campaign({"name": "big", "tasks": ["rte"], "model": LLAMA, "dtype": "bfloat16", "space": "table6",
                           "fixed": {"batch_size": 4, "prompt_length": 20, "steps": 10}, "resources": resources,
                           "fuse": False, "storage_path": str(tmp_path)})


def test_a_campaign_too_large_for_its_gpus_is_refused_at_launch_with_the_plan(tmp_path):
    campaign = _campaign(tmp_path, gpu=1, device="l4")
    with pytest.raises(CampaignError, match=r"resources: the plan for llama-3.1-8b .* needs \d+ x l4"):
        launch(campaign)
    assert not any(tmp_path.rglob("campaign.json"))     # nothing written


def test_enough_devices_or_no_device_kind_pass(tmp_path):
    planned = check_plan(_campaign(tmp_path, gpu=8, device="h100"))
    assert planned.fits and planned.devices_needed <= 8
    assert check_plan(_campaign(tmp_path, gpu=1)) is None
    with pytest.raises(CampaignError, match="resources.device: unknown device"):
        check_plan(_campaign(tmp_path, gpu=1, device="v100"))
