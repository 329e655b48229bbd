"""Voted ensembles of soft prompts (paper §6, Table 3): choosing members among a campaign's
trials (`build`, `selection`), voting (`voting`; the learned vote's fit: `stacking`), the one
replicate -> score -> vote path (`predict`), the members' scores on a split, computed once for
every selection and table, and the one metric reading (`scores`), loading a registered version
(`loaded`), Table 3 (`evaluate`, `report`), guarded promotion (`promote`), transfer retrieval
(`similar`) and the loader of an ensemble's MLflow model (`pyfunc`). Talks to MLflow only through
`softprompt.store`.
"""

from softprompt.core._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "build_ensemble": "build", "LoadedEnsemble": "loaded", "load_registered": "loaded",
    "Vote": "voting", "vote_inputs": "predict", "MemberScores": "scores", "Table3": "evaluate",
    "evaluate_and_log": "report"})
