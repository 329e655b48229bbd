"""The front deployment: the application's HTTP ingress, in front of the model deployment.

    client -> Serve's HTTP proxy -> Front (FastAPI)  --DeploymentHandle-->  SoftPromptServer (app.py)
                                    guard, routes, body      plain methods:   the frozen model, admission,
                                    parsing (422), drain     predict, ...     batching, reloads, metrics

    POST /v1/predict                  voted predictions (their inputs batched across requests)
    GET  /v1/ensembles                what is loaded, with the answering model replica's counts
    POST /v1/ensembles/{name}/reload  load the version the ensemble's alias points to now
    GET  /healthz                     liveness (never needs the token; 503 while draining or no model answers)
    GET  /v1/models, POST /v1/completions   the OpenAI-compatible face (`openai_api`)
    GET  /metrics                     vote figures per ensemble version, Prometheus text (`prometheus`)

Why a front: when a model replica dies with requests in flight (SIGKILL, OOM), Ray Serve's HTTP
proxy answers those requests 500 (it maps `RayActorError` to 500: ray-project/ray#47219), and with
the model as the ingress nothing of ours is left to answer. The front outlives its model
replicas. A model call that fails because its replica died or cannot be reached (`RayActorError`:
`ActorDiedError`, `ActorUnavailableError`) is sent once more, to another replica, when it is
idempotent (predictions, completions, health, listings, metrics); otherwise — a reload, or the
second try — it is answered 503 with `Retry-After` and a one-line JSON message. Before it
retries, the front asks the model's health: when no replica answers within `HEALTH_WAIT_S` (the
only one died; Serve is starting its replacement), the model is down: that request and every
call after it get 503 at once, until a replica answers the health call the front keeps waiting
on (`_watch`). A full model queue is 503 with `Retry-After` too (Serve's backpressure, raised at
this handle).

What the model will not answer comes back as a `refusal.Refused` and is raised here again as the
HTTPException it was (404, 409, 413, 422, an OpenAI 400, a 503 with Retry-After): the same status,
body and headers as when the model was the ingress. Anything else the model raises reaches the
guard: 500 with a request id only.

Graceful shutdown lives here (`shutdown.Drain`): the front holds every request from arrival to
answer, so the driver's drain is a broadcast to the front replicas.

Light by design: fastapi, pydantic, Ray Serve and the light modules (guard, schemas, openai_api,
refusal, shutdown); no JAX and no model code, and no CPU reserved (`num_cpus: 0`), so a front
replica starts in the time of a Ray worker and fits on any node. As many front replicas as model
replicas (`ServeConfig.replicas`): the front's capacity and availability grow with the model's.

(No `from __future__ import annotations` here: FastAPI must see the route annotations as types.)
"""

import asyncio
import logging
import math
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import Application
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from . import openai_api
from .config import ServeConfig
from .guard import Guard, GuardSettings, token_digest
from .openai_api import Completion, CompletionRequest, ModelList
from .refusal import Refused
from .schemas import EnsemblesResponse, Health, PredictRequest, PredictResponse, ReloadResponse
from .shutdown import WAIT_LOOP_S, Drain

logger = logging.getLogger(__name__)
HEALTH_WAIT_S = 5.0                  # /healthz: how long it waits for a model replica's answer before 503
RETRY_AFTER_S = 1                    # what a client turned away (queue full, no model replica) is told to wait
NO_REPLICA = "no model replica could answer (one stopped or is restarting); retry shortly"

api = FastAPI(title="softprompt", summary="Voted soft-prompt ensembles on one frozen model.",
              description="With a token, every /v1/ route needs `Authorization: Bearer <token>` (checked "
                          "before the body is read). Bodies over the size limit get 413.")
api.add_middleware(Guard, settings=lambda: getattr(api.state, "guard", None))
openai_api.install(api)


def replica_gone(error: BaseException) -> bool:
    """The model replica died or cannot be reached (also when Ray wraps that in a RayTaskError)."""
    return isinstance(error, RayActorError) or isinstance(getattr(error, "cause", None), RayActorError)


def no_replica() -> HTTPException:
    return HTTPException(503, NO_REPLICA, headers={"Retry-After": str(RETRY_AFTER_S)})


def busy(error: BackPressureError) -> HTTPException:
    """Serve's backpressure, as the proxy would have answered it: its status and Retry-After."""
    headers = {"Retry-After": str(max(0, math.ceil(error.retry_after_s)))} if error.retry_after_s is not None else None
    return HTTPException(error.status_code, "the server is busy (its queue is full); retry shortly", headers=headers)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Front:
    """One front replica: the guard's settings, a handle to the model deployment, the drain state."""

    def __init__(self, model: DeploymentHandle, guard: GuardSettings):
        self.model = model
        self.down = False                                        # no model replica answers (see `_watch`)
        self.watch: asyncio.Future | None = None                 # the health call waiting for a replica
        self.shutdown = Drain()                                  # see serve/shutdown.py
        self.replica = serve.get_replica_context().replica_tag
        api.state.guard = guard                                  # /v1/ opens now

    async def _ask(self, method: str, *args: Any, retry: bool) -> Any:
        """The model's answer to `method(*args)`; a refusal raised as its HTTPException; a dead or
        unreachable replica retried once on another (`retry`: the call is idempotent) when one is
        up, else 503."""
        if self.down:
            raise no_replica()
        for attempt in (1, 2):
            response = getattr(self.model, method).remote(*args)
            try:
                outcome = await response
            except asyncio.CancelledError:        # the client left, or the grace period ended
                response.cancel()                 # the model replica stops working on it too
                raise
            except BackPressureError as error:
                raise busy(error) from None
            except DeploymentUnavailableError:
                raise no_replica() from None
            except Exception as error:
                if not replica_gone(error):
                    raise
                again = retry and attempt == 1 and await self._replica_up()
                logger.warning("%s: the model replica died or is unreachable (%s); %s", method,
                               type(error).__name__, "retrying on another" if again else "answering 503")
                if again:
                    continue
                raise no_replica() from None
            if isinstance(outcome, Refused):
                raise outcome.exception()
            return outcome
        raise AssertionError("not reached: the second attempt returns or raises")

    async def _replica_up(self) -> bool:
        """After a replica died: whether a model replica answers a health call within
        HEALTH_WAIT_S. If none does, the model is down until one does (`_watch` waits on it)."""
        if self.watch is None or self.watch.done():
            self.watch = asyncio.ensure_future(self._watch())
        try:
            await asyncio.wait_for(asyncio.shield(self.watch), HEALTH_WAIT_S)
        except TimeoutError:
            self.down = True
        return not self.down

    async def _watch(self) -> None:
        """A health call the handle holds until a model replica is up to answer it; then the model
        is up again (a replica that dies while answering it: asked again)."""
        while True:
            try:
                await self.model.health.remote()
                break
            except Exception as error:  # noqa: BLE001 - anything but a death: the next call finds out
                if not replica_gone(error):
                    break
                await asyncio.sleep(WAIT_LOOP_S)
        if self.down:
            logger.warning("a model replica answers again")
        self.down = False

    async def _held(self, method: str, request: Any) -> Any:
        """A prediction: counted while in flight; once draining, 503 for new ones and a grace
        period for those held."""
        async with self.shutdown.request():
            return await self.shutdown.unless_stopped(self._ask(method, request, retry=True))

    # ------------------------------------------------------------------------------- routes

    @api.get("/healthz", response_model=Health, responses={503: {}})
    async def healthz(self) -> Health:
        if self.shutdown.draining:         # load balancers stop sending here at once
            return JSONResponse({"status": "draining"}, status_code=503)
        try:
            return await asyncio.wait_for(self._ask("health", retry=True), HEALTH_WAIT_S)
        except TimeoutError:
            raise no_replica() from None

    @api.post("/v1/predict", response_model=PredictResponse,
              responses={401: {}, 404: {}, 413: {}, 422: {}, 500: {}, 503: {}})
    async def predict(self, request: PredictRequest) -> PredictResponse:
        return await self._held("predict", request)

    @api.get("/v1/ensembles", response_model=EnsemblesResponse, responses={401: {}, 503: {}})
    async def ensembles(self) -> EnsemblesResponse:
        return await self._ask("ensembles", retry=True)

    @api.post("/v1/ensembles/{name}/reload", response_model=ReloadResponse,
              responses={401: {}, 404: {}, 409: {}, 503: {}})
    async def reload(self, name: str) -> ReloadResponse:
        return await self._ask("reload", name, retry=False)     # not retried: it may have half happened

    @api.get("/v1/models", response_model=ModelList, responses={401: {}, 503: {}})
    async def openai_models(self) -> ModelList:
        return await self._ask("models", retry=True)

    @api.post("/v1/completions", response_model=Completion, responses=openai_api.ERRORS)
    async def openai_completions(self, request: CompletionRequest) -> Completion:
        return await self._held("completions", request)

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(self) -> Response:
        return Response(await self._ask("metrics_text", retry=True), media_type=CONTENT_TYPE_LATEST)

    # ----------------------------------------------------------------- replica control (handle)

    async def drain(self, grace_period_s: float) -> dict[str, Any]:
        """Graceful shutdown (the driver's broadcast on SIGTERM): see serve/shutdown.py."""
        return await self.shutdown.drain(grace_period_s) | {"replica": self.replica}


def front_app(model: Application, config: ServeConfig, *, model_holds: int) -> Application:
    """The application: `Front` bound to the bound `model` deployment. `model_holds`: the requests
    one model replica holds and queues; a front replica holds as many, so it never turns away what
    the model would take (beyond that: Serve's backpressure, 503 with Retry-After)."""
    guard = GuardSettings(None if config.token is None else token_digest(config.token_value), config.max_body_bytes)
    return Front.options(num_replicas=config.replicas, max_ongoing_requests=model_holds,
                         max_queued_requests=config.max_queued_requests,
                         backpressure_config=BackpressureConfig(status_code=503, retry_after_s=RETRY_AFTER_S),
                         graceful_shutdown_timeout_s=config.grace_period_s,   # requests in flight finish
                         graceful_shutdown_wait_loop_s=WAIT_LOOP_S).bind(model, guard)


def model_of(app: Application) -> Any:
    """The model deployment bound into an application from `app.build_app` (its options, `init_args`)."""
    return app._bound_deployment.init_args[0]._bound_deployment

