"""The one layer that talks to MLflow: tracking URIs, experiments and trial runs, the paged run
queries, prompt artifacts, the model registry (ensemble versions, aliases, manifests) and
evaluation logging. Every other layer talks to it in plain values (`RunRecord`, `SoftPrompt`,
`EnsembleManifest`); only this package imports `mlflow`.

    >>> from softprompt.store import Store, resolve_tracking_uri
    >>> store = Store(resolve_tracking_uri(storage_path="runs"))
    >>> runs = store.trial_runs("tiny-rte")                               # doctest: +SKIP
    >>> registered = store.resolve_ensemble("rte-ensemble@production")    # doctest: +SKIP

Modules: `names` (tags, kinds, metrics, states), `uris` (where a store is, masking passwords),
`client` (the handle, experiments, paged queries), `trials` (campaign runs), `prompts` (prompt
artifacts), `manifest` (what an ensemble version holds), `registry` (ensembles as MLflow models).
"""

from __future__ import annotations

from .client import RunRecord
from .manifest import EnsembleError, EnsembleManifest, Member
from .registry import DEFAULT_ALIAS, Registry, RegisteredEnsemble, parse_reference
from .trials import TrialRuns
from .uris import DEFAULT_STORAGE_PATH, default_artifact_root, masked, resolve_tracking_uri


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


__all__ = ["DEFAULT_ALIAS", "DEFAULT_STORAGE_PATH", "EnsembleError", "EnsembleManifest", "Member",
           "RegisteredEnsemble", "RunRecord", "Store", "default_artifact_root", "masked", "parse_reference",
           "resolve_tracking_uri"]
