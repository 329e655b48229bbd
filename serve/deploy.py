"""The import path for `serve build`, `serve deploy` and KubeRay's RayService:
`softprompt.serve.deploy:app`, configured from the environment of the process that imports it
(on a cluster: the Serve controller's), since a Serve config carries no constructor arguments.

    SOFTPROMPT_ENSEMBLES   comma-separated references [default: sst2-ensemble@production]
    MLFLOW_TRACKING_URI    the tracking server holding them [default: sqlite:///runs/mlflow.db]
    SOFTPROMPT_API_TOKEN   when set, `Authorization: Bearer <token>` is required on /v1/*
    SOFTPROMPT_MAX_INPUTS  inputs per request [default: 64]
    SOFTPROMPT_FOLLOW_INTERVAL_S  poll each NAME@ALIAS this often and serve the version it moves to
                           [default: 10; 0: off]
    SOFTPROMPT_GRACE_PERIOD_S  seconds a stopping replica gives requests in flight [default: 30]

    serve build softprompt.serve.deploy:app -o serve-config.yaml     # what infra/ ships, generated
    serve deploy serve-config.yaml                                   # onto a running Ray cluster
"""

from __future__ import annotations

import os

from softprompt.store import Store, resolve_tracking_uri

from .app import build_app
from .shutdown import DEFAULT_GRACE_PERIOD_S
from .state import resolve_all

DEFAULT_ENSEMBLES = "sst2-ensemble@production"


def app_from_environment():
    """The application; the ensembles' versions are resolved here, once, when the store answers
    (on the cluster: in the Serve controller), else by the first replica of each start."""
    references = [r.strip() for r in os.environ.get("SOFTPROMPT_ENSEMBLES", DEFAULT_ENSEMBLES).split(",") if r.strip()]
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        versions = [r.reference for r in resolve_all(Store(resolve_tracking_uri(uri)), references)]
    except Exception:  # noqa: BLE001 - `serve build` on a machine without the store: each replica resolves
        versions = references
    return build_app(references, versions=versions, tracking_uri=uri,
                     token=os.environ.get("SOFTPROMPT_API_TOKEN"),   # set but empty: refused by build_app
                     max_inputs=int(os.environ.get("SOFTPROMPT_MAX_INPUTS", "64")),
                     follow_interval_s=float(os.environ.get("SOFTPROMPT_FOLLOW_INTERVAL_S", "10")) or None,
                     grace_period_s=float(os.environ.get("SOFTPROMPT_GRACE_PERIOD_S", DEFAULT_GRACE_PERIOD_S)))


app = app_from_environment()
