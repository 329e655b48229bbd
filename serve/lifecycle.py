"""A server's life, in one place for `softprompt serve`, the demo and the tests' fixtures:

    start(app, config)    Serve's HTTP proxy on config.host:port (127.0.0.1 unless told; FREE_PORT:
                          any free one), then the application -> a `Server`
    wait_healthy(server)  polls its `/healthz` until it answers 200, or `NotHealthy` at the deadline
    stop(server)          drains every front replica (requests in flight get the grace period, see
                          shutdown.py), then removes the application (shared=True: only it) or Serve

    with serving(build_app(["sst2-ensemble@production"]), ServeConfig(), port=FREE_PORT) as server:
        httpx.post(f"{server.url}/v1/predict", json=...)

Ray is the caller's: initialised before `start` (its own, or joined to a cluster with
`shared=True`), shut down after `stop`.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .config import ServeConfig
from .listen import PortInUse, start_http, start_on_free_port
from .shutdown import drain_application
from .versions import drop_book

__all__ = ["FREE_PORT", "NotHealthy", "NotStarted", "PortInUse", "Server", "left_in_flight", "serving", "start", "stop",
           "wait_healthy"]

FREE_PORT = 0                 # `start(..., port=FREE_PORT)`: a free port of the host, picked at start
HEALTH_TIMEOUT_S = 120.0      # how long `wait_healthy` waits by default
POLL_S = 0.2
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # never through $http_proxy


class NotStarted(RuntimeError):
    """The application did not start (a replica failed in its constructor: Serve's message says why)."""


class NotHealthy(RuntimeError):
    """The health route did not answer 200 before the deadline."""


@dataclass(frozen=True)
class Server:
    """A running application: where it answers and how it is stopped."""

    url: str                  # http://host:port[/route_prefix], what clients prefix their routes with
    port: int                 # where Serve's HTTP proxy listens (another application may join it)
    name: str                 # the Serve application
    deployment: str           # its ingress, the front deployment (drained at stop)
    grace_period_s: float     # what requests in flight get at stop
    shared: bool              # on a cluster others use: stop removes only this application
    book: str | None = None   # the application's version book (serve/versions.py), dropped at stop


def _listen(host: str, port: int) -> int:
    if port == FREE_PORT:
        return start_on_free_port(host)
    start_http(host, port)
    return port


def _replica_failure(app_name: str, error: RuntimeError) -> str:
    """The exception a replica's constructor raised (the last line of the traceback Serve keeps in
    the deployment's status: `EnsembleError: ensemble 'x' was built for model ...`), else `error`."""
    from ray import serve

    try:
        deployments = serve.status().applications[app_name].deployments.values()
    except Exception:  # noqa: BLE001 - the status is a courtesy; Serve's own message still says what failed
        return str(error)
    failed = [d for d in deployments if d.status in ("UNHEALTHY", "DEPLOY_FAILED")]   # a str enum
    causes = [lines[-1].strip() for d in failed or deployments   # the model's, not the front's progress line
              if (lines := [x for x in d.message.splitlines() if x.strip()])]
    return "; ".join(dict.fromkeys(causes)) or str(error)


def start(app: Any, config: ServeConfig | None = None, *, port: int | None = None, route_prefix: str = "/",
          shared: bool = False, on_listening: Callable[[], object] | None = None) -> Server:
    """`app` (from `app.build_app`) running as application `config.app_name` behind Serve's HTTP
    proxy on `config.host`: on `port` (default `config.port`; FREE_PORT: any free one; the port of a
    proxy this Ray already runs: joins it). `PortInUse` when the port is taken, `NotStarted` when a
    replica fails to start; either way nothing of it is left running (`shared`: only this
    application is removed, else Serve is shut down). `on_listening()` runs once the proxy
    listens, before the application deploys (Serve has just set its driver logger to INFO)."""
    from ray import serve

    config = config or ServeConfig()
    front, book = _parts(app)
    try:
        listening = _listen(config.host, config.port if port is None else port)
        if on_listening is not None:
            on_listening()
        serve.run(app, name=config.app_name, route_prefix=route_prefix)
    except PortInUse:
        _remove(config.app_name, book, shared)
        raise
    except RuntimeError as error:   # a replica failed to start: its deployment's status holds the traceback
        cause = _replica_failure(config.app_name, error)
        _remove(config.app_name, book, shared)
        raise NotStarted(f"the application did not start: {cause}") from error
    except BaseException:
        _remove(config.app_name, book, shared)
        raise
    client_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)   # a wildcard: ask loopback
    client_host = f"[{client_host}]" if ":" in client_host else client_host
    return Server(url=f"http://{client_host}:{listening}{route_prefix.rstrip('/')}", port=listening,
                  name=config.app_name, deployment=front or config.app_name,
                  grace_period_s=config.grace_period_s, shared=shared, book=book)


def _parts(app: Any) -> tuple[str | None, str | None]:
    """(the ingress deployment's name, the model's version book) of an application from
    `app.build_app` (the front, bound to the model deployment); None for what another app lacks."""
    from .front import model_of

    front = getattr(app, "_bound_deployment", None)
    try:
        book = model_of(app).init_args[0].book
    except (AttributeError, IndexError):
        book = None
    return (front.name if front is not None else None), book


def wait_healthy(server: Server | str, *, timeout_s: float = HEALTH_TIMEOUT_S) -> dict:
    """Polls `GET <url>/healthz` until it answers 200 (returns its JSON body); `NotHealthy`, naming
    the URL and the last answer, when `timeout_s` passes first."""
    url = (server.url if isinstance(server, Server) else server.rstrip("/")) + "/healthz"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            with _DIRECT.open(url, timeout=max(1.0, min(10.0, timeout_s))) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError) as error:
            last = str(getattr(error, "reason", error))
        if time.monotonic() >= deadline:
            raise NotHealthy(f"{url} did not answer 200 within {timeout_s:g} s (last: {last})")
        time.sleep(POLL_S)


def stop(server: Server, *, grace_period_s: float | None = None, drain: bool = True) -> list:
    """Drains every front replica of `server` (up to `grace_period_s`, default the server's;
    `drain=False`: not at all), then removes the application (shared) or shuts Serve down, and
    drops its version book. Returns each front replica's drain answer ({"held", "left", "replica"},
    or an exception)."""
    drained: list = []
    try:
        if drain:
            drained = drain_application(server.name, server.deployment,
                                        server.grace_period_s if grace_period_s is None else grace_period_s)
    finally:
        _remove(server.name, server.book, server.shared)
    return drained


def _remove(name: str, book: str | None, shared: bool) -> None:
    from ray import serve

    if shared:             # a shared cluster: remove only this application, never the others'
        serve.delete(name)
    else:
        serve.shutdown()
    if book:
        drop_book(book)


def left_in_flight(drained: list) -> int:
    """How many requests the front replicas answered 503 at the end of the grace period."""
    return sum(answer.get("left", 0) for answer in drained if isinstance(answer, dict))


@contextlib.contextmanager
def serving(app: Any, config: ServeConfig | None = None, *, port: int | None = None, route_prefix: str = "/",
            shared: bool = False, timeout_s: float = HEALTH_TIMEOUT_S,
            on_listening: Callable[[], object] | None = None) -> Iterator[Server]:
    """start -> wait_healthy -> yield the server -> stop (also when waiting or the body failed)."""
    server = start(app, config, port=port, route_prefix=route_prefix, shared=shared, on_listening=on_listening)
    try:
        wait_healthy(server, timeout_s=timeout_s)
        yield server
    finally:
        stop(server)
