"""`Store`: one MLflow store, with its campaign runs, prompt artifacts and registered ensembles."""

from __future__ import annotations

from .registry import Registry
from .trials import TrialRuns
from .uris import DEFAULT_STORAGE_PATH, default_artifact_root, resolve_tracking_uri


class Store(TrialRuns, Registry):
    """One MLflow store: campaign runs, prompt artifacts and registered ensembles.

    Args:
      tracking_uri: `sqlite:///...`, `postgresql+psycopg://...`, `http://...`.
      artifact_root: artifact location of experiments this object creates (a folder URI), or None.
    """

    @classmethod
    def at(cls, tracking_uri: str | None = None, *, storage_path=DEFAULT_STORAGE_PATH) -> "Store":
        """The store `tracking_uri` names, else `$MLFLOW_TRACKING_URI`, else the SQLite file under
        `storage_path`, with its default artifact root."""
        uri = resolve_tracking_uri(tracking_uri, storage_path=storage_path)
        return cls(uri, artifact_root=default_artifact_root(uri, storage_path=storage_path))
