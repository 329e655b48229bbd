"""The Ray Serve application: ONE replica = ONE copy of the frozen model + the combined prompt
table of every loaded ensemble, behind a FastAPI ingress (OpenAPI at `/docs`).

    POST /v1/predict                  voted predictions (inputs batched across requests)
    GET  /v1/ensembles                what is loaded, with this replica's counts
    POST /v1/ensembles/{name}/reload  load the version the ensemble's alias points to now
    GET  /healthz                     liveness (never needs the token; 503 while draining)
    GET  /v1/models, POST /v1/completions   the OpenAI-compatible face (`openai_api`)
    GET  /metrics                     vote figures per ensemble version, Prometheus text (`prometheus`)

Before any route: `guard.Guard` checks the bearer token and the body size on `/v1/*` and turns
an unexpected failure into a 500 carrying only a request id. Requests are admitted (validated,
tokenised, off the event loop); their inputs then join `@serve.batch` batches, one item per
input, and every batch runs as one pass (`batcher.predict_batch`). A replica queues at most
`max_queued_requests` requests; beyond that Ray Serve answers 503 with `Retry-After`.

Versions: the driver resolves each `name@alias` once; every replica loads exactly those versions
(`versions`). Reload is two-phase: the replica that gets the POST resolves the alias once, every
replica loads that version beside the one it serves (prepare), and only when all succeeded does
each swap its immutable `ServeState` in one assignment (commit) — otherwise all drop it, so every
replica stays on the old version. Requests in flight finish on the version they started with.

    app = build_app(["sst2-ensemble@production"], versions=["sst2-ensemble/3"],
                    tracking_uri="sqlite:///runs/mlflow.db", max_inputs=16)   # any ServeConfig setting
    lifecycle.start(app)    # or: serve run softprompt.serve.app:app_builder ensembles=sst2-ensemble@production

Every setting and its default: `config.ServeConfig`; replicas get `ReplicaConfig` (the settings
without the token, which travels only as its sha256, and the versions resolved in the driver).

(No `from __future__ import annotations` here: FastAPI must see the route annotations as types.)
"""

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator
from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from softprompt.core.compilation_cache import use_compilation_cache
from softprompt.core.models import load_model
from softprompt.core.sharding import default_placement, place_model
from softprompt.ensemble.loaded import load_ensemble, manifest_model
from softprompt.ensemble.voting import Vote
from softprompt.store import EnsembleError, Store, parse_reference, resolve_tracking_uri

from . import openai_api
from .admission import Admitted, admit
from .batcher import Item, predict_batch
from .config import ServeConfig
from .follow import follow_aliases
from .guard import Guard, GuardSettings, token_digest
from .metrics import EnsembleStats, ServeMetrics
from .prometheus import MetricsRoute, VoteMetrics
from .prometheus import router as metrics_router
from .shutdown import WAIT_LOOP_S, Drain
from .schemas import (EnsembleInfo, EnsembleRef, EnsemblesResponse, Health, MemberInfo, Prediction,
                      PredictRequest, PredictResponse, ReloadResponse)
from .state import NotServed, ServeState, load_state, resolve_all
from .versions import apply_reloads, book_name, record_reload, reloaded_versions

logger = logging.getLogger(__name__)
DEFAULT_MAX_ONGOING_REQUESTS = 256   # HTTP requests one replica holds at once (their inputs batch together)
DEFAULTS = ServeConfig()
RETRY_AFTER_S = 1                    # what a client turned away by the full queue is told to wait

api = FastAPI(title="softprompt", summary="Voted soft-prompt ensembles on one frozen model.",
              description="With a token, every /v1/ route needs `Authorization: Bearer <token>` (checked "
                          "before the body is read). Bodies over the size limit get 413.")
api.add_middleware(Guard, settings=lambda: getattr(api.state, "guard", None))
openai_api.install(api)
api.include_router(metrics_router)


@dataclasses.dataclass(frozen=True)
class ReplicaConfig:
    """What every replica is built from."""

    ensembles: tuple[str, ...]        # references as asked: `name@alias`, `name/3` (what a reload re-resolves)
    versions: tuple[str, ...]         # the exact `name/version` each reference resolved to, in the driver
                                      # (the references themselves when the driver could not reach the store)
    tracking_uri: str
    settings: ServeConfig             # without the token; jax_cache_dir absolute
    token_sha256: str | None = None   # the token, as only its digest travels

    @property
    def book(self) -> str:
        return book_name(self.settings.app_name, self.versions)


@serve.deployment(max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS)
@serve.ingress(api)
class SoftPromptServer(openai_api.OpenAIRoutes, MetricsRoute):
    """One replica: the frozen model, the current `ServeState`, metrics and per-version counts."""

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
        self.model = place_model(load_model(manifest_model(registered[0].manifest, settings.model),
                                            dtype=registered[0].manifest.dtype),
                                 default_placement(gpus=settings.devices))   # >= 2 devices: split over them
        self.state: ServeState = load_state(self.store, self.model, config.ensembles, registered)
        self.pending: dict[tuple[str, str], ServeState] = {}   # prepared reloads, by (name, version)
        self.metrics = ServeMetrics()
        self.stats: dict[tuple[str, str], EnsembleStats] = {}
        self.reload_lock = asyncio.Lock()
        self.shutdown = Drain()                                  # see serve/shutdown.py
        self.replica = serve.get_replica_context().replica_tag
        self.votes = VoteMetrics(self.replica)       # GET /metrics
        self.started = time.time()
        self._batched.set_max_batch_size(settings.max_batch_size)
        self._batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        api.state.guard = GuardSettings(config.token_sha256, settings.max_body_bytes)   # /v1/ opens now
        self.follower = None
        if settings.follow_interval_s:       # 0: off. The constructor runs on the replica's event loop
            self.follower = asyncio.get_running_loop().create_task(follow_aliases(
                self.store, lambda: self.state, self.reload, interval_s=settings.follow_interval_s))

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

    # ------------------------------------------------------------------------------- routes

    @api.get("/healthz", response_model=Health, responses={503: {}})
    async def healthz(self) -> Health:
        if self.shutdown.draining:         # load balancers stop sending here at once
            return JSONResponse({"status": "draining"}, status_code=503)
        return Health(status="ok", model=self.model.name,
                      ensembles=[EnsembleRef(name=s.name, version=s.version) for s in self.state.ensembles])

    async def _answer(self, state: ServeState, request: PredictRequest) -> tuple[Admitted, list[Vote]]:
        """`request` admitted under `state` and its inputs voted (batched with everyone's); counted.
        Once the replica drains: 503 for new requests, a grace period for those in flight."""
        async with self.shutdown.request():
            return await self.shutdown.unless_stopped(self._vote(state, request))

    async def _vote(self, state: ServeState, request: PredictRequest) -> tuple[Admitted, list[Vote]]:
        started = time.perf_counter()
        admitted = await asyncio.to_thread(admit, state, self.model, request, max_inputs=self.settings.max_inputs)
        served = admitted.ensemble
        try:
            votes = await asyncio.gather(*(self._predict_one(Item(state, served, pair.input_ids))
                                           for pair in admitted.encoded))
        except Exception:  # the guard answers 500 with a request id; the replica goes on
            self.metrics.request(served.name, served.version, 500, time.perf_counter() - started)
            self.votes.request(served.name, served.version, 500, time.perf_counter() - started)
            raise
        self._stats(served.name, served.version, served.members).record(votes)
        self.metrics.request(served.name, served.version, 200, time.perf_counter() - started, votes)
        self.votes.request(served.name, served.version, 200, time.perf_counter() - started, votes,
                           [member.run_id for member in served.loaded.manifest.members])
        return admitted, votes

    @api.post("/v1/predict", response_model=PredictResponse,
              responses={401: {}, 404: {}, 413: {}, 422: {}, 500: {}, 503: {}})
    async def predict(self, request: PredictRequest) -> PredictResponse:
        admitted, votes = await self._answer(self.state, request)   # this request's version, whatever reloads happen
        served = admitted.ensemble
        return PredictResponse(task=request.task, ensemble=EnsembleRef(name=served.name, version=served.version),
                               predictions=[Prediction(label=v.label, votes=v.votes, shares=v.shares, members=v.members,
                                                       truncated=pair.truncated)
                                            for v, pair in zip(votes, admitted.encoded)])

    @api.get("/v1/ensembles", response_model=EnsemblesResponse, responses={401: {}})
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

    @api.post("/v1/ensembles/{name}/reload", response_model=ReloadResponse,
              responses={401: {}, 404: {}, 409: {}, 503: {}})
    async def reload(self, name: str) -> ReloadResponse:
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

    async def drain(self, grace_period_s: float) -> dict[str, Any]:
        """Graceful shutdown (the driver's broadcast on SIGTERM): see serve/shutdown.py."""
        return await self.shutdown.drain(grace_period_s) | {"replica": self.replica}

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
    replica = ReplicaConfig(tuple(ensembles), tuple(versions), uri, config.replace(token=None, jax_cache_dir=cache),
                            token_sha256=token_digest(config.token_value) if config.token else None)
    ongoing = max(DEFAULT_MAX_ONGOING_REQUESTS, 2 * config.max_batch_size)
    return SoftPromptServer.options(num_replicas=config.replicas, max_ongoing_requests=ongoing,
                                    max_queued_requests=config.max_queued_requests,
                                    backpressure_config=BackpressureConfig(status_code=503,
                                                                           retry_after_s=RETRY_AFTER_S),
                                    graceful_shutdown_timeout_s=config.grace_period_s,   # requests in flight finish
                                    graceful_shutdown_wait_loop_s=WAIT_LOOP_S,
                                    ray_actor_options=actor_options(config)).bind(replica)


def actor_options(config: ServeConfig) -> dict[str, float]:
    """Each replica's Ray resources: `replica_cpus` CPUs and `devices` GPUs (when any)."""
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
