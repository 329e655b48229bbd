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
artifacts), `manifest` (what an ensemble version holds), `registry` (ensembles as MLflow models), `transfer`
(a registered prompt as another run's init).
"""

from softprompt.core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Store": "store", "RunRecord": "client", "TrialRuns": "trials",
    "EnsembleError": "manifest", "EnsembleManifest": "manifest", "Member": "manifest",
    "DEFAULT_ALIAS": "registry", "Registry": "registry", "RegisteredEnsemble": "registry",
    "parse_reference": "registry", "fetch_init_prompt": "transfer",
    "DEFAULT_STORAGE_PATH": "uris", "default_artifact_root": "uris", "masked": "uris",
    "resolve_tracking_uri": "uris"})
