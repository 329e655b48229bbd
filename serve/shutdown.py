"""Graceful shutdown: the front (`front.Front`, every request's way in) told to drain answers
`/healthz` with 503 at once (load balancers stop sending), refuses new predictions with a clean
503 + Retry-After, lets the requests it holds finish within the grace period, and answers whatever
is left at the deadline with 503 too (cancelling that work on the model replicas) — so every
request in flight gets an HTTP answer, never a reset connection.

    driver (`lifecycle.stop`: `softprompt serve` on SIGTERM/SIGINT)   each front replica
    drain_application(app, "Front", grace_period_s)  --broadcast-->  Drain.drain(grace_period_s)
    serve.shutdown()                                       (nothing in flight by then)

The draining state lives in the front only: it holds every request from arrival to answer, so it
alone knows what is in flight, and a model replica need not know that the application stops.
The grace period's default: `ServeConfig.grace_period_s`.

Serve's own `graceful_shutdown_timeout_s` (set to the same grace period on both deployments)
covers the shutdowns the driver does not see: `serve deploy` rolling updates and KubeRay pod
deletions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Awaitable, TypeVar

from fastapi import HTTPException

logger = logging.getLogger(__name__)

WAIT_LOOP_S = 0.2            # how often a draining replica looks at what it still holds
FLUSH_S = 0.5                # after the deadline: time for the 503s to leave before the replica goes
RETRY_AFTER_S = "5"
SHUTTING_DOWN = "the server is shutting down; retry on another instance"

T = TypeVar("T")


def unavailable() -> HTTPException:
    return HTTPException(503, SHUTTING_DOWN, headers={"Retry-After": RETRY_AFTER_S})


class Drain:
    """One front replica's shutdown state: whether it drains, what it holds, when it must let go."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._deadline_passed: asyncio.Event | None = None   # made on the replica's own event loop

    def _deadline(self) -> asyncio.Event:
        if self._deadline_passed is None:
            self._deadline_passed = asyncio.Event()
        return self._deadline_passed

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Counts a request while it runs; refused (503) once the replica drains."""
        if self.draining:
            raise unavailable()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def unless_stopped(self, work: Awaitable[T]) -> T:
        """`work`'s result, or a 503 when the grace period ends first (the work is cancelled)."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._deadline().wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():     # the deadline, or this request itself cancelled (its client left)
                task.cancel()
                task.add_done_callback(lambda finished: finished.cancelled() or finished.exception())   # retrieved
        if task in done:
            return task.result()
        raise unavailable()

    async def drain(self, grace_period_s: float) -> dict[str, Any]:
        """Stops taking requests; waits up to `grace_period_s` for those held to finish, then
        answers the rest with 503. Returns what happened (held at the start, left at the end)."""
        self.draining = True
        held = self.in_flight
        deadline = time.monotonic() + grace_period_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(WAIT_LOOP_S)
        left = self.in_flight
        if left:
            logger.warning("grace period over: %d request(s) still running get 503", left)
            self._deadline().set()
            await asyncio.sleep(FLUSH_S)
        return {"held": held, "left": left}


def drain_application(app_name: str, deployment: str, grace_period_s: float) -> list[dict[str, Any]]:
    """Drains every replica of `deployment` in application `app_name` at once (the driver's side);
    returns each replica's answer (an exception for a replica that did not answer)."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name)
    response = handle.broadcast("drain", grace_period_s)
    return response.results(return_exceptions=True, timeout_s=grace_period_s + 30)
