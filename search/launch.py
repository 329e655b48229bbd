"""Running a campaign: `launch` a new one, `resume` one whose driver died, read its `status`.

A campaign lives in `<storage_path>/<name>/`: Ray Tune's experiment folder (trial folders,
checkpoints, experiment state), `campaign.json` (the validated campaign, its tracking store and
model fingerprint, so `resume` needs only the name), and the final report
(`trials.txt`, `curves.png`). Its MLflow experiment is named after it; every write to MLflow goes
through `softprompt.store`.

Ray: joins the cluster named by `RAY_ADDRESS` when set, else starts a local one (bound to
127.0.0.1, usage stats and token auth off unless the environment says otherwise); an already
initialised Ray in this process is reused.

Example:
    >>> result = launch(load_campaign("examples/campaigns/tiny-rte.yaml"))   # doctest: +SKIP
    >>> [row.status for row in status("tiny-rte", storage_path="runs")]      # doctest: +SKIP
    ['TERMINATED', 'TERMINATED', 'TERMINATED', 'TERMINATED']
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

from softprompt.store import DEFAULT_STORAGE_PATH, Store, default_artifact_root, resolve_tracking_uri

from . import report as report_lib
from .baselines import BaselineScore, recorded_baselines, score_baselines
from .campaign import Campaign, CampaignError, check_resources
from .ray_env import apply_ray_env_defaults
from .trainable import TrialRuntime, run_trial, share_model

logger = logging.getLogger(__name__)

STATE_FILE = "campaign.json"
TrialHook = Callable[[str, int], None]   # (trial id, step) after each report, in the trial process


class CampaignResult(NamedTuple):
    name: str
    experiment_dir: Path
    tracking_uri: str
    rows: list[report_lib.TrialRow]
    curves: Path | None              # the validation-curve PNG
    baselines: list[BaselineScore]   # the designed prompts, best first


class _Stored(NamedTuple):
    """What `campaign.json` holds."""

    campaign: Campaign
    tracking_uri: str
    artifact_root: str | None
    model_fingerprint: str


def experiment_dir(name: str, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> Path:
    return Path(storage_path).resolve() / name


def accelerator_env(campaign: Campaign) -> dict[str, str]:
    """Environment for the trial workers: with a fractional GPU per trial, several trials share a
    GPU, so XLA must not preallocate most of its memory for the first one."""
    gpu = campaign.resources.gpu or 0
    return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if 0 < gpu < 1 else {}


def ensure_ray(campaign: Campaign) -> None:
    """Connects to (or starts) Ray, then checks the campaign's per-trial resources against it."""
    import ray

    if not ray.is_initialized():
        apply_ray_env_defaults()
        runtime_env = {"env_vars": accelerator_env(campaign)}
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=runtime_env)
        else:
            # address="local": a new local Ray, never a cluster someone else started on this machine
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env)
    check_resources(campaign, ray.cluster_resources())


def launch(campaign: Campaign, *, storage_path: str | os.PathLike | None = None,
           trial_hook: TrialHook | None = None) -> CampaignResult:
    """Runs a new campaign to the end and returns its trial table. `trial_hook(trial_id, step)`
    runs inside each trial after each report (Ray pickles it to the trial processes)."""
    if storage_path is not None:
        campaign = campaign.replace(storage_path=str(storage_path))
    folder = experiment_dir(campaign.name, campaign.storage_path)
    if (folder / STATE_FILE).exists():
        raise CampaignError("name", f"campaign {campaign.name!r} already exists in {folder}: "
                            f"`softprompt search resume {campaign.name}` continues it, or choose another --name")
    ensure_ray(campaign)
    tracking_uri = resolve_tracking_uri(campaign.tracking_uri, storage_path=campaign.storage_path)
    store = Store(tracking_uri, artifact_root=default_artifact_root(tracking_uri, storage_path=campaign.storage_path))
    folder.mkdir(parents=True, exist_ok=True)
    store.prepare_experiment(campaign.name)  # before any trial: creates the database too
    model = _load_model(campaign)
    stored = _Stored(campaign, tracking_uri, store.artifact_root, model.fingerprint)
    _write_state(folder, stored)
    score_baselines(campaign, model, store)
    tuner = _new_tuner(stored, store, model=model, trial_hook=trial_hook)
    del model  # the trials' copy is in the object store now
    tuner.fit()
    return _finish(stored, store, folder)


def resume(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH,
           trial_hook: TrialHook | None = None) -> CampaignResult:
    """Continues a campaign whose driver stopped: unfinished and errored trials resume from their
    last checkpoints, finished ones are kept. Logs to the tracking store recorded at launch."""
    from ray import tune

    folder = experiment_dir(name, storage_path)
    stored = _read_state(folder)
    ensure_ray(stored.campaign)
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri and env_uri != stored.tracking_uri:
        logger.warning("MLFLOW_TRACKING_URI differs from the store this campaign was launched with; "
                       "its runs stay in %s", stored.tracking_uri)
    store = Store(stored.tracking_uri, artifact_root=stored.artifact_root)
    store.prepare_experiment(name)
    model = _load_model(stored.campaign)
    score_baselines(stored.campaign, model, store)
    trainable = _trainable(stored.campaign, folder, model=model, trial_hook=trial_hook)
    del model
    tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, resume_errored=True)
    tuner.fit()
    return _finish(stored, store, folder)


def stored_campaign(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> Campaign:
    """The validated campaign a stored campaign folder was launched with."""
    return _read_state(experiment_dir(name, storage_path)).campaign


def stored_tracking_uri(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> str | None:
    """The tracking store a campaign folder records, or None when there is no such folder."""
    folder = experiment_dir(name, storage_path)
    return _read_state(folder).tracking_uri if (folder / STATE_FILE).exists() else None


def status(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH
           ) -> tuple[list[report_lib.TrialRow], list[BaselineScore]]:
    """The campaign's trials as Tune last recorded them (configuration, state, best score, steps),
    and its designed prompts' scores."""
    folder = experiment_dir(name, storage_path)
    stored = _read_state(folder)
    return report_lib.trial_rows(folder), recorded_baselines(name, Store(stored.tracking_uri))


def _finish(stored: _Stored, store: Store, folder: Path) -> CampaignResult:
    rows = report_lib.trial_rows(folder)
    curves = report_lib.write_report(folder, rows, store=store, campaign=stored.campaign.name,
                                     extra=[folder / STATE_FILE])
    return CampaignResult(stored.campaign.name, folder, stored.tracking_uri, rows, curves,
                          recorded_baselines(stored.campaign.name, store))


def _load_model(campaign: Campaign):
    """The frozen model, loaded in the driver (bypassing the in-process cache, so the driver does not
    keep a copy once it is in the object store)."""
    from softprompt.core.models import load_model

    return load_model.__wrapped__(campaign.model, dtype=campaign.dtype)


def _runtime(campaign: Campaign, trial_hook: TrialHook | None) -> TrialRuntime:
    cache = campaign.jax_cache_dir or str(Path(campaign.storage_path).resolve() / "jax_cache")
    return TrialRuntime(jax_cache_dir=cache, adopt_checkpoints=campaign.scheduler.type == "pbt",
                        after_report=trial_hook)


def _trainable(campaign: Campaign, folder: Path, *, model, trial_hook: TrialHook | None = None) -> Any:
    """The trial function with its resources, the shared weights and the runtime settings bound."""
    from ray import tune

    bundle = {"CPU": campaign.resources.cpu}
    if campaign.resources.gpu:
        bundle["GPU"] = campaign.resources.gpu
    if campaign.resources.tpu:
        bundle["TPU"] = campaign.resources.tpu
    shared = share_model(model) if campaign.share_weights else None
    bound = tune.with_parameters(run_trial, model=shared, runtime=_runtime(campaign, trial_hook))
    return tune.with_resources(bound, tune.PlacementGroupFactory([bundle]))


def _new_tuner(stored: _Stored, store: Store, *, model, trial_hook: TrialHook | None) -> Any:
    from ray import tune

    from .mlflow_callback import MlflowTrackingCallback
    from .schedulers import make_scheduler, make_search_alg

    campaign = stored.campaign
    callback = MlflowTrackingCallback(store, campaign=campaign.name, model_fingerprint=stored.model_fingerprint)
    return tune.Tuner(
        _trainable(campaign, experiment_dir(campaign.name, campaign.storage_path), model=model, trial_hook=trial_hook),
        param_space=campaign.param_space(),
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=campaign.num_samples,
                                    scheduler=make_scheduler(campaign), search_alg=make_search_alg(campaign),
                                    reuse_actors=True),  # a trial process runs the next trial: imports,
                                                         # traced functions and shared weights stay warm
        run_config=tune.RunConfig(
            name=campaign.name, storage_path=str(Path(campaign.storage_path).resolve()),
            failure_config=tune.FailureConfig(max_failures=campaign.max_failures),
            # PBT copies other trials' checkpoints: pruning them breaks Tune's bookkeeping, so keep all
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if campaign.scheduler.type == "pbt" else 2),
            callbacks=[callback], verbose=1))


def _write_state(folder: Path, stored: _Stored) -> None:
    state = {"campaign": stored.campaign.to_dict(), "tracking_uri": stored.tracking_uri,
             "artifact_root": stored.artifact_root, "model_fingerprint": stored.model_fingerprint}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2))


def _read_state(folder: Path) -> _Stored:
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        raise CampaignError("name", f"no campaign in {folder} (launch it first, or pass --storage-path)") from None
    return _Stored(Campaign.model_validate(state["campaign"]), state["tracking_uri"], state["artifact_root"],
                   state["model_fingerprint"])
