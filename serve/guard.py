"""What every request meets before any route runs (a pure ASGI middleware, so nothing has read
or parsed the body yet):

- a request id (`x-request-id` answered on every response, and named in logs);
- on `/v1/*` and `/metrics`: the bearer token, when the server has one (401 before the body is read);
- on `/v1/*`: the body size limit (413 from `content-length`, or as soon as a streamed body
  passes the limit: the body is read here, bounded, and replayed to the route);
- a refused body (401, 413) is read and dropped up to `LINGER_BYTES` before the answer goes out
  (nginx's "lingering close"): a client still sending would otherwise see its connection reset
  instead of the status and its message;
- an unexpected exception: 500 with the request id only, never the exception's text (the text
  goes to the log with the id).

The front replica (`front.Front`) sets `api.state.guard` (a `GuardSettings`) when it starts;
until then nothing passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from typing import Any, Awaitable, Callable, NamedTuple

logger = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1/"
PROTECTED_PATHS = ("/metrics",)       # guarded like /v1/ (Prometheus sends the token: `authorization:`)
LINGER_BYTES = 64 << 20               # a refused body is drained up to this much (beyond: reset)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class GuardSettings(NamedTuple):
    token_sha256: str | None          # None: no token required
    max_body_bytes: int               # ServeConfig.max_body_bytes


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def _respond(send: Send, status: int, body: dict, request_id: str, extra: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
               (b"x-request-id", request_id.encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _authorized(scope: Scope, settings: GuardSettings) -> bool:
    if settings.token_sha256 is None:
        return True
    header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and bool(token) and secrets.compare_digest(token_digest(token.strip()),
                                                                                  settings.token_sha256)


class Guard:
    """ASGI middleware: `api.add_middleware(Guard)`; reads `app.state.guard` per request."""

    def __init__(self, app: Callable, settings: Callable[[], GuardSettings | None]) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:16]
        started = False

        async def send_with_id(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = message | {"headers": list(message.get("headers", [])) + [(b"x-request-id", request_id.encode())]}
            await send(message)

        settings = self.settings()
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):           # an app mounted under a route prefix
            path = path[len(root):]
        if path.startswith(PROTECTED_PREFIX) or path in PROTECTED_PATHS:
            if settings is None:
                await _respond(send, 503, {"detail": "the server is starting"}, request_id, {"Retry-After": "1"})
                return
            if not _authorized(scope, settings):
                await _linger(receive, LINGER_BYTES)
                await _respond(send, 401, {"detail": "missing or wrong bearer token"}, request_id,
                               {"WWW-Authenticate": "Bearer"})
                return
            too_large = {"detail": f"request body over {settings.max_body_bytes} bytes"}
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
                await _linger(receive, LINGER_BYTES)
                await _respond(send, 413, too_large, request_id)
                return
            body = await _read_body(receive, settings.max_body_bytes)
            if body is None:                          # (the rest of it drained)
                await _respond(send, 413, too_large, request_id)
                return
            receive = _replay(body, receive)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:  # noqa: BLE001 - the last guard: a 500 with an id, the details in the log only
            logger.exception("request %s failed", request_id)
            if not started:
                await _respond(send, 500, {"detail": "internal error", "request_id": request_id}, request_id)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes (the rest then drained)."""
    chunks, seen = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)          # the client went away: the route sees an empty body
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            if message.get("more_body", False):
                await _linger(receive, LINGER_BYTES)
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _linger(receive: Receive, limit: int) -> None:
    """Reads and drops the rest of a refused body, up to `limit` bytes."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that hands the route the buffered body once, then waits on the real channel."""
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
