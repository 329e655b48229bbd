"""Voted ensembles of soft prompts (paper §6, Table 3): choosing members among a campaign's
trials (`build`, `selection`), voting (`voting`; the learned vote's fit: `stacking`), the one
replicate -> score -> vote path (`predict`), loading a registered version (`loaded`), Table 3
(`evaluate`, `report`) and the loader of an ensemble's MLflow model (`pyfunc`). Talks to MLflow
only through `softprompt.store`.
"""

from softprompt.core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "build_ensemble": "build", "LoadedEnsemble": "loaded", "load_registered": "loaded",
    "Vote": "voting", "vote_inputs": "predict", "Table3": "evaluate", "evaluate_and_log": "report"})
