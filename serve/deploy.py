"""The import path for `serve build`, `serve deploy` and KubeRay's RayService:
`softprompt.serve.deploy:app`, configured from the environment of the process that imports it
(on a cluster: the Serve controller's), since a Serve config carries no constructor arguments.

    SOFTPROMPT_ENSEMBLES   comma-separated references [default: sst2-ensemble@production]
    MLFLOW_TRACKING_URI    the tracking server holding them [default: sqlite:///runs/mlflow.db]
    SOFTPROMPT_API_TOKEN   when set, `Authorization: Bearer <token>` is required on /v1/*
    SOFTPROMPT_MAX_INPUTS  inputs per request [default: 64]

    serve build softprompt.serve.deploy:app -o serve-config.yaml     # what infra/ ships, generated
    serve deploy serve-config.yaml                                   # onto a running Ray cluster
"""

from __future__ import annotations

import os

from .app import build_app

DEFAULT_ENSEMBLES = "sst2-ensemble@production"


def app_from_environment():
    references = [r.strip() for r in os.environ.get("SOFTPROMPT_ENSEMBLES", DEFAULT_ENSEMBLES).split(",") if r.strip()]
    return build_app(references, tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
                     token=os.environ.get("SOFTPROMPT_API_TOKEN") or None,
                     max_inputs=int(os.environ.get("SOFTPROMPT_MAX_INPUTS", "64")))


app = app_from_environment()
