"""What a model replica hands back to the front when it will not answer a request: a `Refused`
value (status, detail, headers) instead of an exception.

    model replica (`app.SoftPromptServer`)           front (`front.Front`)
    @refusing                                        outcome = await handle.predict.remote(request)
    async def predict(self, request):                if isinstance(outcome, Refused):
        ... raise HTTPException(404, "...")  ---->        raise outcome.exception()   # same 404

A refusal is the client's mistake (404, 409, 413, 422, an OpenAI 400) or a passing state (503
with Retry-After), not a failure: it crosses the process boundary as plain data, so nothing
depends on how Ray wraps and pickles exceptions (`RayTaskError`, which cannot rebuild an
HTTPException raised with keyword arguments), and the replica logs no traceback for it. The front
raises it again as the HTTPException it was: the same status, body and headers as when the model
deployment was the HTTP ingress. Anything else a model method raises stays an exception (the
front's guard answers it 500 with a request id).
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, NamedTuple, TypeVar

from fastapi import HTTPException

T = TypeVar("T")


class Refused(NamedTuple):
    """An HTTPException as data: what the front answers instead of the model's result."""

    status: int
    detail: Any                          # a string, or FastAPI-style error dicts (a 422's `loc`, `msg`)
    headers: dict[str, str] | None = None

    @classmethod
    def of(cls, error: HTTPException) -> "Refused":
        return cls(error.status_code, error.detail, dict(error.headers) if error.headers else None)

    def exception(self) -> HTTPException:
        return HTTPException(self.status, self.detail, headers=self.headers)


def refusing(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T | Refused]]:
    """A model method whose HTTPException becomes a returned `Refused`."""

    @functools.wraps(method)
    async def answered(*args: Any, **kwargs: Any) -> T | Refused:
        try:
            return await method(*args, **kwargs)
        except HTTPException as error:
            return Refused.of(error)

    return answered
