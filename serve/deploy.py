"""The import path for `serve build`, `serve deploy` and KubeRay's RayService:
`softprompt.serve.deploy:app`, configured from the environment of the process that imports it
(on a cluster: the Serve controller's), since a Serve config carries no constructor arguments.

    SOFTPROMPT_ENSEMBLES   comma-separated references [default: sst2-ensemble@production]
    MLFLOW_TRACKING_URI    the tracking server holding them [default: sqlite:///runs/mlflow.db]
    SOFTPROMPT_API_TOKEN   when set, `Authorization: Bearer <token>` is required on /v1/*
    SOFTPROMPT_<SETTING>   any other `ServeConfig` setting, its default when unset:
                           SOFTPROMPT_MAX_INPUTS, SOFTPROMPT_FOLLOW_INTERVAL_S (0: off),
                           SOFTPROMPT_GRACE_PERIOD_S, SOFTPROMPT_REPLICAS, ... (config.environment_variable)

    serve build softprompt.serve.deploy:app -o serve-config.yaml     # what infra/ ships, generated
    serve deploy serve-config.yaml                                   # onto a running Ray cluster
"""

from __future__ import annotations

import os
from typing import Mapping

from softprompt.store import Store, resolve_tracking_uri

from .app import build_app
from .config import DEFAULT_ENSEMBLES, ENSEMBLES_ENV, ServeConfig
from .state import resolve_all


def app_from_environment(environ: Mapping[str, str] = os.environ):
    """The application; the ensembles' versions are resolved here, once, when the store answers
    (on the cluster: in the Serve controller), else by the first replica of each start."""
    references = [r.strip() for r in environ.get(ENSEMBLES_ENV, DEFAULT_ENSEMBLES).split(",") if r.strip()]
    uri = environ.get("MLFLOW_TRACKING_URI")
    config = ServeConfig.from_environment(environ)     # a token set but empty is refused here
    try:
        versions = [r.reference for r in resolve_all(Store(resolve_tracking_uri(uri)), references)]
    except Exception:  # noqa: BLE001 - `serve build` on a machine without the store: each replica resolves
        versions = references
    return build_app(references, versions=versions, tracking_uri=uri, config=config)


app = app_from_environment()
