"""The model deployment and the application: ONE model replica = ONE copy of the frozen model +
the combined prompt table of every loaded ensemble, behind the light front deployment that is the
HTTP ingress (`front.py`: guard, routes, body parsing, drain; OpenAPI at `/docs`).

    client -> Serve's proxy -> Front --handle--> SoftPromptServer.predict(PredictRequest) -> PredictResponse
                                                 .completions, .health, .ensembles, .models, .reload, .metrics_text

Each method takes the parsed request and returns the response body, or a `refusal.Refused` (404,
409, 413, 422, an OpenAI 400, 503) that the front answers with exactly its status, body and
headers. Requests are admitted (validated, tokenised, off the event loop); their inputs then join
`@serve.batch` batches, one item per input, and every batch runs as one pass
(`batcher.predict_batch`). A model replica queues at most `max_queued_requests` requests per
caller; beyond that the front answers 503 with `Retry-After`.

Versions: the driver resolves each `name@alias` once; every replica loads exactly those versions
(`versions`). Reload is two-phase: the replica that gets the call resolves the alias once, every
replica loads that version beside the one it serves (prepare), and only when all succeeded does
each swap its immutable `ServeState` in one assignment (commit) — otherwise all drop it, so every
replica stays on the old version. Requests in flight finish on the version they started with.

    app = build_app(["sst2-ensemble@production"], versions=["sst2-ensemble/3"],
                    tracking_uri="sqlite:///runs/mlflow.db", max_inputs=16)   # any ServeConfig setting
    lifecycle.start(app)    # or: serve run softprompt.serve.app:app_builder ensembles=sst2-ensemble@production

Every setting and its default: `config.ServeConfig`; model replicas get `ReplicaConfig` (the
settings without the token, and the versions resolved in the driver); the front gets the guard's
settings (the token only as its sha256).
"""

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from fastapi import HTTPException
from pydantic import Field, field_validator
from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from softprompt.core.compilation_cache import use_compilation_cache
from softprompt.core.models import load_model
from softprompt.core.sharding import default_placement
from softprompt.ensemble.loaded import load_ensemble, manifest_model
from softprompt.ensemble.voting import Vote
from softprompt.store import EnsembleError, Store, parse_reference, resolve_tracking_uri

from .admission import Admitted, admit
from .batcher import Item, predict_batch
from .completions import completion, completion_request, model_list
from .config import ServeConfig
from .follow import follow_aliases
from .front import RETRY_AFTER_S, front_app
from .metrics import EnsembleStats, ServeMetrics
from .openai_api import Completion, CompletionRequest, ModelList
from .prometheus import VoteMetrics
from .refusal import refusing
from .shutdown import WAIT_LOOP_S
from .schemas import (EnsembleInfo, EnsembleRef, EnsemblesResponse, Health, MemberInfo, Prediction,
                      PredictRequest, PredictResponse, ReloadResponse)
from .state import NotServed, ServeState, load_state, resolve_all
from .versions import apply_reloads, book_name, record_reload, reloaded_versions

logger = logging.getLogger(__name__)
DEFAULT_MAX_ONGOING_REQUESTS = 256   # HTTP requests one replica holds at once (their inputs batch together)
DEFAULTS = ServeConfig()


@dataclasses.dataclass(frozen=True)
class ReplicaConfig:
    """What every replica is built from."""

    ensembles: tuple[str, ...]        # references as asked: `name@alias`, `name/3` (what a reload re-resolves)
    versions: tuple[str, ...]         # the exact `name/version` each reference resolved to, in the driver
                                      # (the references themselves when the driver could not reach the store)
    tracking_uri: str
    settings: ServeConfig             # without the token (the front's); jax_cache_dir absolute

    @property
    def book(self) -> str:
        return book_name(self.settings.app_name, self.versions)


@serve.deployment(max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS)
class SoftPromptServer:
    """One model replica: the frozen model, the current `ServeState`, metrics and per-version
    counts; its methods are what the front calls (never an HTTP ingress itself)."""

    def __init__(self, config: ReplicaConfig):
        self.config = config
        settings = self.settings = config.settings
        if settings.jax_cache_dir:
            try:
                use_compilation_cache(settings.jax_cache_dir)
            except OSError as error:   # a cache only saves compilations: serve without it
                logger.warning("no JAX compilation cache at %s (%s); compiling in memory", settings.jax_cache_dir,
                               error)
        self.store = Store(config.tracking_uri)
        versions = apply_reloads(config.versions, reloaded_versions(config.book))   # what the peers serve
        registered = resolve_all(self.store, versions)
        self.model = load_model(manifest_model(registered[0].manifest, settings.model),
                                dtype=registered[0].manifest.dtype,
                                placement=default_placement(gpus=settings.devices))   # >= 2 devices: split as read
        self.state: ServeState = load_state(self.store, self.model, config.ensembles, registered)
        self.pending: dict[tuple[str, str], ServeState] = {}   # prepared reloads, by (name, version)
        self.metrics = ServeMetrics()
        self.stats: dict[tuple[str, str], EnsembleStats] = {}
        self.reload_lock = asyncio.Lock()
        self.replica = serve.get_replica_context().replica_tag
        self.votes = VoteMetrics(self.replica)       # GET /metrics
        self.started = time.time()
        self._batched.set_max_batch_size(settings.max_batch_size)
        self._batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.follower = None
        if settings.follow_interval_s:       # 0: off. The constructor runs on the replica's event loop
            self.follower = asyncio.get_running_loop().create_task(follow_aliases(
                self.store, lambda: self.state, self._reload, interval_s=settings.follow_interval_s))

    # ------------------------------------------------------------------------------ helpers

    def _stats(self, name: str, version: str, members: int) -> EnsembleStats:
        return self.stats.setdefault((name, version), EnsembleStats(members))

    @serve.batch(max_batch_size=DEFAULTS.max_batch_size, batch_wait_timeout_s=DEFAULTS.batch_wait_timeout_s)
    async def _batched(self, items: list[Item]) -> list[Vote | Exception]:
        """Many requests' inputs -> one pass (in a thread: the event loop keeps admitting)."""
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(predict_batch, self.model, items, max_rows=self.settings.max_rows_per_pass)
        except Exception as error:  # noqa: BLE001 - predict_batch isolates failures; this is a last guard
            logger.exception("batched pass failed")
            return [error] * len(items)
        self.metrics.batch(len(items), result.rows, time.perf_counter() - started)
        return result.votes

    async def _predict_one(self, item: Item) -> Vote:
        vote = await self._batched(item)
        if isinstance(vote, Exception):
            raise vote
        return vote

    async def _answer(self, state: ServeState, request: PredictRequest) -> tuple[Admitted, list[Vote]]:
        """`request` admitted under `state` and its inputs voted (batched with everyone's); counted."""
        started = time.perf_counter()
        admitted = await asyncio.to_thread(admit, state, self.model, request, max_inputs=self.settings.max_inputs)
        served = admitted.ensemble
        try:
            votes = await asyncio.gather(*(self._predict_one(Item(state, served, pair.input_ids))
                                           for pair in admitted.encoded))
        except Exception:  # the front's guard answers 500 with a request id; the replica goes on
            self.metrics.request(served.name, served.version, 500, time.perf_counter() - started)
            self.votes.request(served.name, served.version, 500, time.perf_counter() - started)
            raise
        self._stats(served.name, served.version, served.members).record(votes)
        self.metrics.request(served.name, served.version, 200, time.perf_counter() - started, votes)
        self.votes.request(served.name, served.version, 200, time.perf_counter() - started, votes,
                           [member.run_id for member in served.loaded.manifest.members])
        return admitted, votes

    # ------------------------------------------------------------------- what the front calls

    async def health(self) -> Health:
        return Health(status="ok", model=self.model.name,
                      ensembles=[EnsembleRef(name=s.name, version=s.version) for s in self.state.ensembles])

    @refusing
    async def predict(self, request: PredictRequest) -> PredictResponse:
        admitted, votes = await self._answer(self.state, request)   # this request's version, whatever reloads happen
        served = admitted.ensemble
        return PredictResponse(task=request.task, ensemble=EnsembleRef(name=served.name, version=served.version),
                               predictions=[Prediction(label=v.label, votes=v.votes, shares=v.shares, members=v.members,
                                                       truncated=pair.truncated)
                                            for v, pair in zip(votes, admitted.encoded)])

    @refusing
    async def completions(self, request: CompletionRequest) -> Completion:
        state = self.state                              # one version for the whole request
        admitted, votes = await self._answer(state, completion_request(state, request))
        return completion(request.model, admitted.ensemble, votes, [pair.truncated for pair in admitted.encoded])

    async def models(self) -> ModelList:
        return model_list(self.state, started=self.started)

    async def metrics_text(self) -> bytes:
        """`GET /metrics`: this replica's vote figures, Prometheus text."""
        return self.votes.exposition()

    async def ensembles(self) -> EnsemblesResponse:
        listing = []
        for served in self.state.ensembles:
            manifest = served.loaded.manifest
            stats = self._stats(served.name, served.version, served.members)
            members = [MemberInfo(run_id=m.run_id, metric=m.metric, sha256=m.sha256, disagreement_rate=rate)
                       for m, rate in zip(manifest.members, stats.member_rates())]
            listing.append(EnsembleInfo(
                name=served.name, version=served.version, reference=served.reference, task=served.task.name,
                model=manifest.model or self.model.name, model_fingerprint=manifest.model_fingerprint,
                vote_rule=manifest.vote_rule, metric=manifest.metric, members=members, requests=stats.requests,
                predictions=stats.predictions, disagreement_rate=stats.disagreement_rate,
                split_vote_rate=stats.split_vote_rate))
        return EnsemblesResponse(replica=self.replica, ensembles=listing)

    @refusing
    async def reload(self, name: str) -> ReloadResponse:
        return await self._reload(name)

    async def _reload(self, name: str) -> ReloadResponse:
        """Two-phase reload of ensemble `name` on every model replica (HTTPException 404, 409, 503)."""
        try:
            served = self.state.named(name)
        except NotServed as error:
            raise HTTPException(404, str(error)) from None
        try:
            registered = await asyncio.to_thread(self.store.resolve_ensemble, served.reference)
        except EnsembleError as error:
            raise HTTPException(409, f"cannot reload {name!r}: {error}") from None
        except Exception:  # noqa: BLE001 - the tracking store is unreachable or failing
            logger.exception("reload of %s: the tracking store failed", name)
            raise HTTPException(503, f"cannot reach the tracking store to reload {name!r}",
                                headers={"Retry-After": "5"}) from None
        version = registered.version
        context = serve.get_replica_context()
        handle = serve.get_deployment_handle(context.deployment, context.app_name)
        prepared = await handle.broadcast("prepare_version", name, version).results_async(return_exceptions=True)
        failures = [r for r in prepared if isinstance(r, BaseException)]
        if failures:
            await handle.broadcast("abort_version", name, version).results_async(return_exceptions=True)
            logger.error("reload of %s to version %s failed on %d replica(s): %s", name, version, len(failures),
                         failures[0])
            raise HTTPException(409, f"reload of {name!r} to version {version} failed on {len(failures)} of "
                                     f"{len(prepared)} replica(s); every replica stays on version {served.version}")
        await asyncio.to_thread(record_reload, self.config.book, name, version)   # replicas started later
        committed = await handle.broadcast("commit_version", name, version).results_async(return_exceptions=True)
        return ReloadResponse(name=name, reference=served.reference, previous_version=served.version,
                              version=version, replicas=sum(not isinstance(r, BaseException) for r in committed))

    # ----------------------------------------------------------------- replica control (handle)

    async def prepare_version(self, name: str, version: str) -> dict[str, Any]:
        """Loads `version` of ensemble `name` beside the served state (phase 1 of a reload)."""
        async with self.reload_lock:
            if self.state.named(name).version == version:
                return {"replica": self.replica, "version": version, "changed": False}
            if (name, version) in self.pending:      # another replica's follower prepared it already
                return {"replica": self.replica, "version": version, "changed": True}

            def rebuild() -> ServeState:
                loaded = load_ensemble(self.store, f"{name}/{version}", self.model)
                return self.state.replaced(self.model, loaded)

            self.pending[(name, version)] = await asyncio.to_thread(rebuild)
        return {"replica": self.replica, "version": version, "changed": True}

    async def commit_version(self, name: str, version: str) -> dict[str, Any]:
        """Serves the prepared `version` from now on: one assignment, the swap (phase 2)."""
        async with self.reload_lock:
            prepared = self.pending.pop((name, version), None)
            if prepared is not None:
                self.state = prepared
        logger.info("replica %s serves %s version %s", self.replica, name, self.state.named(name).version)
        return {"replica": self.replica, "version": self.state.named(name).version}

    async def abort_version(self, name: str, version: str) -> None:
        """Drops a prepared reload (another replica could not load it)."""
        async with self.reload_lock:
            self.pending.pop((name, version), None)


def build_app(ensembles: Sequence[str], *, versions: Sequence[str] | None = None, tracking_uri: str | None = None,
              config: ServeConfig | None = None, **settings: Any) -> Application:
    """The bound application (start it with `lifecycle.start`). `config` (default: ServeConfig's
    defaults) with any of its settings overridden by keyword (`max_inputs=8, token="t"`).
    `versions`: the exact `name/version` of each reference, resolved once here when not given."""
    if not ensembles:
        raise EnsembleError("give at least one ensemble to serve (NAME@ALIAS)")
    config = (config or DEFAULTS).replace(**settings)      # validated: a bad setting is one line
    uri = resolve_tracking_uri(tracking_uri)
    if versions is None:
        versions = [registered.reference for registered in resolve_all(Store(uri), ensembles)]
    if [parse_reference(v)[0] for v in versions] != [parse_reference(r)[0] for r in ensembles]:
        raise EnsembleError(f"versions {list(versions)} do not match the references {list(ensembles)}")
    cache = str(Path(config.jax_cache_dir).resolve()) if config.jax_cache_dir else None   # the same for every replica
    replica = ReplicaConfig(tuple(ensembles), tuple(versions), uri, config.replace(token=None, jax_cache_dir=cache))
    ongoing = max(DEFAULT_MAX_ONGOING_REQUESTS, 2 * config.max_batch_size)
    model = SoftPromptServer.options(num_replicas=config.replicas, max_ongoing_requests=ongoing,
                                     max_queued_requests=config.max_queued_requests,   # per caller: each front
                                     backpressure_config=BackpressureConfig(status_code=503,   # how the front
                                                                            retry_after_s=RETRY_AFTER_S),   # answers it
                                     graceful_shutdown_timeout_s=config.grace_period_s,   # requests in flight finish
                                     graceful_shutdown_wait_loop_s=WAIT_LOOP_S,
                                     ray_actor_options=actor_options(config)).bind(replica)
    return front_app(model, config, model_holds=ongoing + config.max_queued_requests)


def actor_options(config: ServeConfig) -> dict[str, float]:
    """Each model replica's Ray resources: `replica_cpus` CPUs and `devices` GPUs (when any)."""
    return {"num_cpus": config.replica_cpus} | ({"num_gpus": config.devices} if config.devices else {})


class AppArgs(ServeConfig):
    """`serve run softprompt.serve.app:app_builder ensembles=a@production,b@production max_inputs=8`
    (or a Serve config's `args`): every `ServeConfig` setting, plus what to serve."""

    ensembles: list[str] = Field(description="References, a list or comma-separated.")
    versions: list[str] | None = Field(None, description="Their exact `name/version`s [default: resolved here, once].")
    tracking_uri: str | None = Field(None, description="Default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db.")

    @field_validator("ensembles", "versions", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


def app_builder(args: AppArgs) -> Application:
    """Ray Serve application builder (typed args)."""
    config = ServeConfig(**{name: getattr(args, name) for name in ServeConfig.model_fields})
    return build_app(args.ensembles, versions=args.versions, tracking_uri=args.tracking_uri, config=config)
