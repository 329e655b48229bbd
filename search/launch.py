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
import shutil
from pathlib import Path
from typing import Any, Callable, NamedTuple

from softprompt.core.compilation_cache import cache_dir_or
from softprompt.store import DEFAULT_STORAGE_PATH, Store, default_artifact_root, masked, resolve_tracking_uri
from softprompt.store.resilience import StoreUnreachable, check_reachable

from . import report as report_lib
from . import space as space_lib
from .baselines import BaselineScore, recorded_baselines, score_baselines
from .campaign import Campaign, CampaignError, check_resources
from .capacity import check_plan
from .init_prompt import INIT_FOLDER, INIT_FROM, with_init_prompt
from .ray_env import apply_ray_env_defaults, ray_log_options, verbose
from .state import PENDING_FILE, STATE_FILE, Stored, driver_lock, read_state, write_json_atomically, write_state
from .step_server import SERVERS_FILE, FuseSettings, end_step_servers, server_records
from .shared_model import share_model
from .trainable import TrialRuntime, run_trial

logger = logging.getLogger(__name__)

TrialHook = Callable[[str, int], None]   # (trial id, step) after each report, in the trial process


class CampaignResult(NamedTuple):
    name: str
    experiment_dir: Path
    tracking_uri: str
    rows: list[report_lib.TrialRow]
    curves: Path | None              # the validation-curve PNG
    baselines: list[BaselineScore]   # the designed prompts, best first
    finished: bool = False           # every trial ended (terminated or errored)
    ensembles: tuple[dict, ...] = ()  # built when it ended (recorded by the shell)

    @property
    def all_failed(self) -> bool:
        return bool(self.rows) and all(row.status == "ERROR" for row in self.rows)


def experiment_dir(name: str, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> Path:
    return Path(storage_path).resolve() / name


def accelerator_env(campaign: Campaign) -> dict[str, str]:
    """Environment for the trial workers (core/sharding.py reads the last three): with a fractional
    GPU per trial, several trials share a GPU, so XLA must not preallocate most of its memory for the
    first one; the GPUs a trial asked for (2 or more: its weights split over all of them) and the
    campaign's `sharding:`."""
    from softprompt.core.sharding import ENV_GPUS, ENV_MODEL_AXIS, ENV_STRATEGY

    gpu = campaign.resources.gpu or 0
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"} if 0 < gpu < 1 else {}
    if gpu and not campaign.fused():
        env[ENV_GPUS] = f"{gpu:g}"
    if campaign.sharding.model_axis is not None:
        env[ENV_MODEL_AXIS] = str(campaign.sharding.model_axis)
    if campaign.sharding.strategy is not None:
        env[ENV_STRATEGY] = campaign.sharding.strategy
    return env


def ensure_ray(campaign: Campaign) -> None:
    """Connects to (or starts) Ray, then checks the campaign's per-trial resources against it."""
    import ray

    if not ray.is_initialized():
        apply_ray_env_defaults()
        runtime_env = {"env_vars": accelerator_env(campaign)}
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=runtime_env, **ray_log_options())
        else:
            # address="local": a new local Ray, never a cluster someone else started on this machine
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env,
                     **ray_log_options())
    check_resources(campaign, ray.cluster_resources())


def launch(campaign: Campaign, *, storage_path: str | os.PathLike | None = None,
           trial_hook: TrialHook | None = None) -> CampaignResult:
    """Runs a new campaign to the end and returns its trial table. `trial_hook(trial_id, step)`
    runs inside each trial after each report (Ray pickles it to the trial processes).

    An unreachable tracking store, or trials the planner finds too large for the devices they ask
    for (`resources.device`, search/capacity.py), are refused before anything is written."""
    if storage_path is not None:
        campaign = campaign.replace(storage_path=str(storage_path))
    folder = experiment_dir(campaign.name, campaign.storage_path)
    if (folder / STATE_FILE).exists():
        raise CampaignError("name", f"campaign {campaign.name!r} already exists in {folder}: "
                            f"`softprompt search resume {campaign.name}` continues it, or choose another --name")
    tracking_uri = resolve_tracking_uri(campaign.tracking_uri, storage_path=campaign.storage_path)
    campaign = campaign.replace(tracking_uri=masked(campaign.tracking_uri))   # the password stays in memory only
    _check_store(tracking_uri)
    check_plan(campaign)   # with resources.device: refused now, not out of memory an hour later
    ensure_ray(campaign)
    store = Store(tracking_uri, artifact_root=default_artifact_root(tracking_uri, storage_path=campaign.storage_path))
    with driver_lock(folder):
        store.prepare_experiment(campaign.name)  # before any trial: creates the database too
        model = _load_model(campaign)
        campaign = _resolve_init_prompt(campaign, store, folder, model)
        stored = Stored(campaign, tracking_uri, store.artifact_root, model.fingerprint)
        write_state(folder, stored)
        score_baselines(campaign, model, store)
        tuner = _new_tuner(stored, store, model=model, trial_hook=trial_hook)
        del model  # the trials' copy is in the object store now
        _fit(tuner, campaign, folder)
        return _finish(stored, store, folder)


def resume(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH,
           trial_hook: TrialHook | None = None) -> CampaignResult:
    """Continues a campaign whose driver stopped, at whatever moment it stopped: unfinished and
    errored trials resume from their last checkpoints, finished ones are kept; a campaign killed
    before Tune saved any state starts its trials afresh. Logs to the store recorded at launch.
    A finished campaign is reported as it is, and nothing changes."""
    folder = experiment_dir(name, storage_path)
    stored = read_state(folder)
    if stored.finished:
        return _result(stored, Store(stored.tracking_uri), folder)
    _check_store(stored.tracking_uri)
    ensure_ray(stored.campaign)
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri and masked(env_uri) != masked(stored.tracking_uri):
        logger.warning("MLFLOW_TRACKING_URI differs from the store this campaign was launched with; "
                       "its runs stay in %s", masked(stored.tracking_uri))
    store = Store(stored.tracking_uri, artifact_root=stored.artifact_root)
    with driver_lock(folder):
        store.prepare_experiment(name)
        model = _load_model(stored.campaign)
        if model.fingerprint != stored.model_fingerprint:
            raise CampaignError("model", f"{stored.campaign.model!r} now loads with fingerprint "
                                f"{model.fingerprint[:12]}…, but the campaign's trials were trained on "
                                f"{stored.model_fingerprint[:12]}… (the model files changed)")
        score_baselines(stored.campaign, model, store)
        if _tune_state_saved(folder):
            from ray import tune

            trainable = _trainable(stored.campaign, folder, model=model, trial_hook=trial_hook)
            tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, resume_errored=True)
        else:   # the driver died after campaign.json, before Tune's first state: start the trials
            tuner = _new_tuner(stored, store, model=model, trial_hook=trial_hook)
        del model
        _fit(tuner, stored.campaign, folder)
        return _finish(stored, store, folder)


def record_ensembles(folder: Path, ensembles: list[dict]) -> None:
    """Remembers in the campaign `folder` the ensembles built when it ended (a later `resume` builds none)."""
    write_state(folder, read_state(folder)._replace(ensembles=tuple(ensembles)))


def stored_campaign(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> Stored:
    """What a stored campaign folder records: the campaign, its store, whether it finished."""
    return read_state(experiment_dir(name, storage_path))


def stored_tracking_uri(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> str | None:
    """The tracking store a campaign folder records, or None when there is no such folder."""
    folder = experiment_dir(name, storage_path)
    return read_state(folder).tracking_uri if (folder / STATE_FILE).exists() else None


def status(name: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH
           ) -> tuple[list[report_lib.TrialRow], list[BaselineScore]]:
    """The campaign's trials as Tune last recorded them (configuration, state, best score, steps),
    and its designed prompts' scores."""
    folder = experiment_dir(name, storage_path)
    stored = read_state(folder)
    rows = report_lib.trial_rows(folder) if _tune_state_saved(folder) else []
    return rows, recorded_baselines(name, Store(stored.tracking_uri))


def _fit(tuner, campaign: Campaign, folder: Path) -> None:
    """Runs the trials; then ends the campaign's step servers (fused trials), also on failure,
    keeping the records of those alive then in `step-servers.json` (`step_server.ServerRecord`)."""
    try:
        tuner.fit()
    finally:
        if campaign.fused():
            try:
                write_json_atomically(folder / SERVERS_FILE, server_records(campaign.name))
            finally:
                end_step_servers(campaign.name)


def _check_store(uri: str) -> None:
    try:
        check_reachable(uri)
    except StoreUnreachable as error:
        raise CampaignError("tracking_uri", str(error)) from None


def _ended(rows: list[report_lib.TrialRow], folder: Path) -> bool:
    """Every trial ended, and every MLflow write reached the store (nothing pending)."""
    pending = folder / PENDING_FILE
    complete = not pending.exists() or json.loads(pending.read_text() or "[]") == []
    return bool(rows) and all(row.status in ("TERMINATED", "ERROR") for row in rows) and complete


def _tune_state_saved(folder: Path) -> bool:
    return any(folder.glob("experiment_state-*.json")) and (folder / "tuner.pkl").exists()


def _result(stored: Stored, store: Store, folder: Path) -> CampaignResult:
    rows = report_lib.trial_rows(folder)
    return CampaignResult(stored.campaign.name, folder, stored.tracking_uri, rows, folder / report_lib.CURVES_FILE,
                          recorded_baselines(stored.campaign.name, store), stored.finished, stored.ensembles)


def _finish(stored: Stored, store: Store, folder: Path) -> CampaignResult:
    rows = report_lib.trial_rows(folder)
    finished = _ended(rows, folder)
    stored = stored._replace(finished=finished)
    write_state(folder, stored)
    report_lib.write_report(folder, rows, store=store, campaign=stored.campaign.name, extra=[folder / STATE_FILE])
    return _result(stored, store, folder)


def _resolve_init_prompt(campaign: Campaign, store: Store, folder: Path, model) -> Campaign:
    """`fixed.init_from` as a prompt folder inside the campaign folder, checked against the model
    and the prompt lengths, handed to the trials as init: from_file (init_prompt.py)."""
    value = campaign.fixed.get(INIT_FROM)
    if value is None:
        return campaign
    from softprompt.core.config import TrainConfig
    from softprompt.core.prompts import SoftPrompt
    from softprompt.store import fetch_init_prompt

    target, field = folder / INIT_FOLDER, f"fixed.{INIT_FROM}"
    try:
        if os.path.isdir(value):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(value, target)
        else:
            fetch_init_prompt(store, value, target)
        prompt = SoftPrompt.load(target, model=model)     # refuses a prompt of another model
    except ValueError as error:
        raise CampaignError(field, str(error)) from None
    axis = campaign.axes().get("prompt_length")
    longest = max(space_lib.axis_values(axis)) if axis else campaign.fixed.get("prompt_length",
                                                                               TrainConfig.prompt_length)
    if prompt.length < longest:
        raise CampaignError(field, f"{value} has {prompt.length} positions; trials ask for up to {longest}")
    return campaign.replace(fixed=with_init_prompt(campaign.fixed, target))


def _load_model(campaign: Campaign):
    """The frozen model, loaded in the driver as numpy weights (no device: the driver only
    fingerprints them and puts them in the object store) and outside the in-process cache (no copy
    is kept once they are there)."""
    from softprompt.core.models import load_model

    return load_model(campaign.model, dtype=campaign.dtype, cached=False, host=True)


def _runtime(campaign: Campaign, trial_hook: TrialHook | None) -> TrialRuntime:
    cache = campaign.jax_cache_dir or cache_dir_or(Path(campaign.storage_path).resolve() / "jax_cache")
    return TrialRuntime(jax_cache_dir=cache, adopt_checkpoints=campaign.scheduler.type == "pbt",
                        after_report=trial_hook, campaign=campaign.name)


def fuse_settings(campaign: Campaign) -> FuseSettings:
    """What each node's step server runs with, from the campaign's `fuse:` section."""
    fuse = campaign.fuse
    return FuseSettings(max_trials=fuse.max_trials, rows_per_call=fuse.rows_per_call,
                        window_ms=fuse.window_ms, gpu=campaign.step_server_gpus())


def _trainable(campaign: Campaign, folder: Path, *, model, trial_hook: TrialHook | None = None) -> Any:
    """The trial function with its resources, the shared weights and the runtime settings bound.
    Fused: the trials take no GPU (their node's step server does) and get the weights' ObjectRef,
    which they hand to the step server."""
    import ray
    from ray import tune

    fused = campaign.fused()
    bundle = {"CPU": campaign.resources.cpu}
    if campaign.resources.gpu and not fused:
        bundle["GPU"] = campaign.resources.gpu
    if campaign.resources.tpu:
        bundle["TPU"] = campaign.resources.tpu
    runtime = _runtime(campaign, trial_hook)
    if fused:
        runtime = runtime._replace(fuse=fuse_settings(campaign), model_ref=(ray.put(share_model(model)),))
        bound = tune.with_parameters(run_trial, model=None, runtime=runtime)
    else:
        shared = share_model(model) if campaign.share_weights else None
        bound = tune.with_parameters(run_trial, model=shared, runtime=runtime)
    return tune.with_resources(bound, tune.PlacementGroupFactory([bundle]))


def _new_tuner(stored: Stored, store: Store, *, model, trial_hook: TrialHook | None, num_samples: int | None = None,
               search_alg: Any = None, tune_folder: Path | None = None) -> Any:
    """The campaign's Tuner; an extension (`extend.py`) gives its own sample count, warm searcher
    and Tune folder inside the campaign folder."""
    from ray import tune

    from .mlflow_callback import MlflowTrackingCallback
    from .progress_lines import TrialLines
    from .schedulers import make_scheduler, make_search_alg

    campaign = stored.campaign
    folder = tune_folder or experiment_dir(campaign.name, campaign.storage_path)
    callback = MlflowTrackingCallback(store, campaign=campaign.name, model_fingerprint=stored.model_fingerprint,
                                      folder=folder)
    # Tune's own status table unless verbose; one short line per trial event otherwise
    shown = [callback] if verbose() else [callback, TrialLines(campaign.distinguishing_axes())]
    if campaign.fused():
        from .fused_departures import FusedDepartures

        shown.append(FusedDepartures(campaign.name))   # a trial whose process died leaves its group too
    return tune.Tuner(
        _trainable(campaign, folder, model=model, trial_hook=trial_hook),
        param_space=campaign.param_space(),
        tune_config=tune.TuneConfig(metric="score", mode="max", num_samples=num_samples or campaign.num_samples,
                                    scheduler=make_scheduler(campaign),
                                    search_alg=make_search_alg(campaign) if search_alg is None else search_alg,
                                    reuse_actors=True),  # a trial process runs the next trial: imports,
                                                         # traced functions and shared weights stay warm
        run_config=tune.RunConfig(
            name=folder.name, storage_path=str(folder.parent.resolve()),
            failure_config=tune.FailureConfig(max_failures=campaign.max_failures),
            # PBT copies other trials' checkpoints: pruning them breaks Tune's bookkeeping, so keep all
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if campaign.scheduler.type == "pbt" else 2),
            callbacks=shown, verbose=1 if verbose() else 0))
