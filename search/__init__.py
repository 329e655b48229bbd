"""Prompt-tuning campaigns on Ray Tune over the paper's Table 6, every trial tracked in MLflow.

    >>> from softprompt.search import load_campaign
    >>> from softprompt.search.launch import launch, resume, status
    >>> result = launch(load_campaign("examples/campaigns/tiny-rte.yaml"))   # doctest: +SKIP
    >>> status("tiny-rte", storage_path="runs")                              # doctest: +SKIP

Modules: `campaign` (the YAML schema and its checks), `space` (Table 6 as Tune objects),
`trainable` (one trial), `mlflow_callback` (all MLflow writes, in the driver), `schedulers`,
`launch` (launch / resume / status), `report` (trial table and validation curves).
Attributes load lazily, so a trial process importing `trainable` does not import MLflow.
"""

from softprompt.core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Campaign": "campaign", "CampaignError": "campaign", "load_campaign": "campaign", "parse_campaign": "campaign",
    "TABLE6": "space", "CampaignResult": "launch", "launch": "launch", "resume": "launch", "status": "launch",
    "TrialRow": "report"})
