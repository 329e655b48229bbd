"""The Ray Serve application: ONE replica = ONE copy of the frozen model + the combined prompt
table of every loaded ensemble, behind a FastAPI ingress (OpenAPI at `/docs`).

    POST /v1/predict                  voted predictions (inputs batched across requests)
    GET  /v1/ensembles                what is loaded, with this replica's counts
    POST /v1/ensembles/{name}/reload  load the version the ensemble's alias points to now
    GET  /healthz                     liveness (never needs the token)

Requests are admitted (validated, tokenised) on arrival; their inputs then join `@serve.batch`
batches, one item per input, and every batch runs as one pass (`batcher.predict_batch`).

Reload: the replica that gets the POST resolves the alias once and broadcasts that exact
version to every replica of the deployment; each loads it off the event loop and swaps its
immutable `ServeState` in one assignment, so requests in flight finish on the old version.

    app = build_app(["sst2-ensemble@production"], tracking_uri="sqlite:///runs/mlflow.db",
                    max_inputs=64, max_batch_size=32, batch_wait_timeout_s=0.05)
    serve.run(app)      # or: serve run softprompt.serve.app:app_builder ensembles=sst2-ensemble@production

(No `from __future__ import annotations` here: FastAPI must see the route annotations as types.)
"""

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

from softprompt.core.compilation_cache import use_compilation_cache
from softprompt.core.models import load_model
from softprompt.ensemble.loaded import load_ensemble
from softprompt.ensemble.predict import DEFAULT_MAX_ROWS
from softprompt.ensemble.voting import Vote
from softprompt.store import EnsembleError, Store, resolve_tracking_uri

from .admission import admit
from .batcher import Item, predict_batch
from .metrics import EnsembleStats, ServeMetrics
from .schemas import (EnsembleInfo, EnsembleRef, EnsemblesResponse, Health, MemberInfo, Prediction,
                      PredictRequest, PredictResponse, ReloadResponse)
from .state import NotServed, ServeState, load_state, resolve_all

logger = logging.getLogger(__name__)
DEFAULT_MAX_ONGOING_REQUESTS = 256   # HTTP requests one replica holds at once (their inputs batch together)

api = FastAPI(title="softprompt", summary="Voted soft-prompt ensembles on one frozen model.")
bearer = HTTPBearer(auto_error=False, description="Only when the server was started with a token.")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """What every replica is built from (the token travels only as its sha256)."""

    ensembles: tuple[str, ...]        # references: `name@alias`, `name/3`, `models:/name@alias`
    tracking_uri: str
    model: str | None = None          # default: the model named in the first ensemble's manifest
    max_inputs: int = 64              # per request; more -> 413
    max_batch_size: int = 32          # inputs per batched pass
    batch_wait_timeout_s: float = 0.05
    max_rows_per_pass: int = DEFAULT_MAX_ROWS   # model rows (inputs x members) per forward chunk
    token_sha256: str | None = None
    jax_cache_dir: str | None = None  # JAX's persistent compilation cache, shared by replicas and restarts


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@serve.deployment(max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS)
@serve.ingress(api)
class SoftPromptServer:
    """One replica: the frozen model, the current `ServeState`, metrics and per-version counts."""

    def __init__(self, config: ServeConfig):
        self.config = config
        if config.jax_cache_dir:
            use_compilation_cache(config.jax_cache_dir)
        self.store = Store(config.tracking_uri)
        registered = resolve_all(self.store, config.ensembles)
        self.model = load_model(config.model or registered[0].manifest.model, dtype=registered[0].manifest.dtype)
        self.state: ServeState = load_state(self.store, self.model, config.ensembles, registered)
        self.metrics = ServeMetrics()
        self.stats: dict[tuple[str, str], EnsembleStats] = {}
        self.reload_lock = asyncio.Lock()
        self.replica = serve.get_replica_context().replica_tag
        self._batched.set_max_batch_size(config.max_batch_size)
        self._batched.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    # ------------------------------------------------------------------------------ helpers

    def _authorize(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        expected = self.config.token_sha256
        if expected is None:
            return
        if credentials is None or not secrets.compare_digest(token_digest(credentials.credentials), expected):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def _stats(self, name: str, version: str, members: int) -> EnsembleStats:
        return self.stats.setdefault((name, version), EnsembleStats(members))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.05)
    async def _batched(self, items: list[Item]) -> list[Vote | Exception]:
        """Many requests' inputs -> one pass (in a thread: the event loop keeps admitting)."""
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(predict_batch, self.model, items, max_rows=self.config.max_rows_per_pass)
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

    @api.get("/healthz", response_model=Health)
    async def healthz(self) -> Health:
        return Health(status="ok", model=self.model.name,
                      ensembles=[EnsembleRef(name=s.name, version=s.version) for s in self.state.ensembles])

    @api.post("/v1/predict", response_model=PredictResponse,
              responses={401: {}, 404: {}, 413: {}, 422: {}, 500: {}})
    async def predict(self, request: PredictRequest,
                      credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> PredictResponse:
        self._authorize(credentials)
        started = time.perf_counter()
        state = self.state                        # this request's version, whatever reloads happen
        admitted = admit(state, self.model, request, max_inputs=self.config.max_inputs)
        served = admitted.ensemble
        try:
            votes = await asyncio.gather(*(self._predict_one(Item(state, served, pair.input_ids))
                                           for pair in admitted.encoded))
        except Exception as error:  # noqa: BLE001 - fail this request only; the replica goes on
            logger.exception("prediction failed")
            self.metrics.request(served.name, served.version, 500, time.perf_counter() - started)
            raise HTTPException(500, f"prediction failed: {type(error).__name__}: {error}") from None
        self._stats(served.name, served.version, served.members).record(votes)
        self.metrics.request(served.name, served.version, 200, time.perf_counter() - started, votes)
        return PredictResponse(task=request.task, ensemble=EnsembleRef(name=served.name, version=served.version),
                               predictions=[Prediction(label=v.label, votes=v.votes, shares=v.shares, members=v.members,
                                                       truncated=pair.truncated)
                                            for v, pair in zip(votes, admitted.encoded)])

    @api.get("/v1/ensembles", response_model=EnsemblesResponse, responses={401: {}})
    async def ensembles(self, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> EnsemblesResponse:
        self._authorize(credentials)
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
    async def reload(self, name: str,
                     credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ReloadResponse:
        self._authorize(credentials)
        try:
            served = self.state.named(name)
        except NotServed as error:
            raise HTTPException(404, str(error)) from None
        try:
            registered = await asyncio.to_thread(self.store.resolve_ensemble, served.reference)
        except EnsembleError as error:
            raise HTTPException(409, f"cannot reload {name!r}: {error}") from None
        except Exception as error:  # noqa: BLE001 - the tracking store is unreachable or failing
            raise HTTPException(503, f"cannot reach the tracking store to reload {name!r}: {error}") from None
        handle = serve.get_deployment_handle(serve.get_replica_context().deployment,
                                             serve.get_replica_context().app_name)
        results = await handle.broadcast("apply_version", name, registered.version).results_async(
            return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise HTTPException(409, f"reload of {name!r} to version {registered.version} failed on "
                                     f"{len(failures)} of {len(results)} replica(s): {failures[0]}")
        return ReloadResponse(name=name, reference=served.reference, previous_version=served.version,
                              version=registered.version, replicas=len(results))

    # ----------------------------------------------------------------- replica control (handle)

    async def apply_version(self, name: str, version: str) -> dict[str, Any]:
        """Serve `version` of ensemble `name` from now on (called on every replica by a reload)."""
        async with self.reload_lock:
            if self.state.named(name).version == version:
                return {"replica": self.replica, "version": version, "changed": False}

            def rebuild() -> ServeState:
                loaded = load_ensemble(self.store, f"{name}/{version}", self.model)
                return self.state.replaced(self.model, loaded)

            self.state = await asyncio.to_thread(rebuild)   # one assignment: the swap
        logger.info("replica %s now serves %s version %s", self.replica, name, version)
        return {"replica": self.replica, "version": version, "changed": True}


def build_app(ensembles: list[str], *, tracking_uri: str | None = None, model: str | None = None, max_inputs: int = 64,
              max_batch_size: int = 32, batch_wait_timeout_s: float = 0.05, token: str | None = None,
              replicas: int = 1, max_rows_per_pass: int = 32, replica_cpus: float = 1.0,
              jax_cache_dir: str | None = None) -> Application:
    """The bound application (pass it to `serve.run`). `token`: require `Authorization: Bearer`."""
    if not ensembles:
        raise EnsembleError("give at least one ensemble to serve (NAME@ALIAS)")
    config = ServeConfig(tuple(ensembles), resolve_tracking_uri(tracking_uri), model=model, max_inputs=max_inputs,
                         max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s,
                         max_rows_per_pass=max_rows_per_pass, token_sha256=token_digest(token) if token else None,
                         jax_cache_dir=str(Path(jax_cache_dir).resolve()) if jax_cache_dir else None)
    ongoing = max(DEFAULT_MAX_ONGOING_REQUESTS, 2 * max_batch_size)
    return SoftPromptServer.options(num_replicas=replicas, max_ongoing_requests=ongoing,
                                    ray_actor_options={"num_cpus": replica_cpus}).bind(config)


class AppArgs(BaseModel):
    """`serve run softprompt.serve.app:app_builder ensembles=a@production,b@production ...` (or a config)."""

    ensembles: list[str] | str = Field(description="References, a list or comma-separated.")
    tracking_uri: str | None = Field(None, description="Default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db.")
    model: str | None = None
    max_inputs: int = 64
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.05
    token: str | None = None
    replicas: int = 1
    max_rows_per_pass: int = 32
    replica_cpus: float = 1.0
    jax_cache_dir: str | None = None


def app_builder(args: AppArgs) -> Application:
    """Ray Serve application builder (typed args)."""
    fields = args.model_dump()
    ensembles = fields.pop("ensembles")
    if isinstance(ensembles, str):
        ensembles = [part.strip() for part in ensembles.split(",") if part.strip()]
    return build_app(ensembles, **fields)
