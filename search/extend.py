"""Extending a finished campaign: N more trials from the same search space, in the same MLflow
experiment and campaign folder, with the searcher told what the earlier trials scored.

Each extension is its own Tune experiment inside the campaign folder,
`<campaign>/extensions/<k>/` (with `extension.json`: its trial count and whether it ended), so
the campaign's own Tune state is never rewritten; `report.trial_rows` reads the campaign's trials
and every extension's, so `search status`, the trial table and the ensembles see them all.

Warm start, by searcher:
- `search: optuna`: `OptunaSearch(points_to_evaluate=[configs], evaluated_rewards=[best scores])`
  adds every earlier trial with a score to the study as a completed trial before the first new
  suggestion, so TPE samples where the earlier trials did well;
- `search: random`: nothing to learn from; its seed moves on (`seed + k`), so the new draws are
  not a repeat of the old ones.

Exactly N new trials: `num_samples` = N / (tasks x seeds), so N must be a multiple of the grid.
An extension whose driver was killed resumes (`Tuner.restore`) when `extend` runs again with the
same N; extending twice adds a second extension after the first.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from softprompt.store import DEFAULT_STORAGE_PATH, Store

from .campaign import Campaign, CampaignError
from .report import EXTENSIONS, TrialRow, trial_rows
from .state import driver_lock, read_state, write_json_atomically

EXTENSION_FILE = "extension.json"


def extension_dirs(folder: Path) -> list[Path]:
    """The campaign's extension folders, oldest first."""
    root = Path(folder) / EXTENSIONS
    found = [path for path in root.iterdir() if (path / EXTENSION_FILE).exists()] if root.is_dir() else []
    return sorted(found, key=lambda path: int(path.name))


def read_extension(path: Path) -> dict[str, Any]:
    return json.loads((path / EXTENSION_FILE).read_text())


def searched_point(campaign: Campaign, config: dict[str, Any]) -> dict[str, Any]:
    """The searched axes' values of a trial's configuration (what the searcher samples)."""
    return {name: config[name] for name in campaign.axes() if name in config}


def warm_start(campaign: Campaign, rows: Sequence[TrialRow]) -> tuple[list[dict], list[float]]:
    """(points, rewards): each earlier trial with a score, as the searcher's evaluated points."""
    points, rewards = [], []
    for row in rows:
        if math.isfinite(row.best_score) and set(campaign.axes()) <= set(row.config):
            points.append(searched_point(campaign, row.config))
            rewards.append(float(row.best_score))
    return points, rewards


def warm_search_alg(campaign: Campaign, rows: Sequence[TrialRow], number: int) -> Any:
    """The extension's search algorithm (module doc), warm-started from `rows`."""
    if campaign.search.type == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        points, rewards = warm_start(campaign, rows)
        seed = None if campaign.search.seed is None else campaign.search.seed + number
        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed), points_to_evaluate=points or None,
                                evaluated_rewards=rewards or None)
        if campaign.max_concurrent_trials:
            return ConcurrencyLimiter(searcher, max_concurrent=campaign.max_concurrent_trials)
        return searcher
    from ray.tune.search import BasicVariantGenerator

    seed = None if campaign.search.seed is None else campaign.search.seed + number
    return BasicVariantGenerator(constant_grid_search=True, random_state=seed,
                                 max_concurrent=campaign.max_concurrent_trials or 0)


def samples_for(campaign: Campaign, trials: int) -> int:
    """Tune's `num_samples` giving exactly `trials` trials (each sample runs the task x seed grid)."""
    grid = len(campaign.tasks) * campaign.seeds
    if trials < 1 or trials % grid:
        raise CampaignError("trials", f"{trials} trials cannot be split over this campaign's {grid} "
                            f"task x seed combinations: give a positive multiple of {grid}")
    return trials // grid


def extend(name: str, trials: int, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH, trial_hook=None):
    """Runs `trials` more trials of campaign `name` (module doc); returns the campaign's
    `CampaignResult`, every trial included."""
    from ray import tune

    from . import launch as launching

    folder = launching.experiment_dir(name, storage_path)
    stored = read_state(folder)
    campaign = stored.campaign
    samples = samples_for(campaign, trials)
    earlier = extension_dirs(folder)
    unfinished = [path for path in earlier if not read_extension(path)["finished"]]
    if not stored.finished and not unfinished:
        raise CampaignError("name", f"campaign {name!r} has not ended: `softprompt search resume {name}` first")
    launching._check_store(stored.tracking_uri)
    launching.ensure_ray(campaign)
    store = Store(stored.tracking_uri, artifact_root=stored.artifact_root)
    with driver_lock(folder):
        store.prepare_experiment(name)
        model = launching._load_model(campaign)
        if model.fingerprint != stored.model_fingerprint:
            raise CampaignError("model", f"{campaign.model!r} now loads with fingerprint {model.fingerprint[:12]}…, "
                                f"but the campaign's trials were trained on {stored.model_fingerprint[:12]}…")
        if unfinished:
            path = unfinished[0]
            if read_extension(path)["trials"] != trials:
                raise CampaignError("trials", f"extension {path.name} of {name!r} ({read_extension(path)['trials']} "
                                    f"trials) did not end: run `search extend {name} --trials "
                                    f"{read_extension(path)['trials']}` to finish it first")
        else:
            path = folder / EXTENSIONS / str(len(earlier) + 1)
            path.mkdir(parents=True)
            write_json_atomically(path / EXTENSION_FILE, {"trials": trials, "finished": False,
                                                          "warm_start": len(warm_start(campaign, trial_rows(folder))[0])})
        if launching._tune_state_saved(path):
            trainable = launching._trainable(campaign, path, model=model, trial_hook=trial_hook)
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            search_alg = warm_search_alg(campaign, trial_rows(folder), int(path.name))
            tuner = launching._new_tuner(stored, store, model=model, trial_hook=trial_hook, num_samples=samples,
                                         search_alg=search_alg, tune_folder=path)
        del model
        launching._fit(tuner, campaign, path)
        rows = trial_rows(path)
        ended = launching._ended(rows, path) and len(rows) == trials
        write_json_atomically(path / EXTENSION_FILE, read_extension(path) | {"finished": ended})
        return launching._finish(stored, store, folder)


def extensions_summary(folder: Path) -> list[dict[str, Any]]:
    """What `search status` adds: each extension's number, trial count and whether it ended."""
    return [{"extension": int(path.name)} | read_extension(path) for path in extension_dirs(folder)]
