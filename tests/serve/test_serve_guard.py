"""The guard in front of every route, on a real FastAPI app in-process: the token is checked
before the body is read, bodies over the limit get 413 (declared or streamed), and a failure
becomes a 500 that carries a request id and never the exception's text."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from softprompt.serve.guard import Guard, GuardSettings, token_digest

SECRET_TEXT = "the exception text with a secret path /etc/shadow"


class Body(BaseModel):
    text: str


def make_app(settings: GuardSettings | None) -> tuple[FastAPI, list]:
    app = FastAPI()
    parsed: list = []
    app.add_middleware(Guard, settings=lambda: settings)

    @app.post("/v1/echo")
    async def echo(body: Body) -> dict:
        parsed.append(body.text)
        return {"text": body.text}

    @app.post("/v1/fail")
    async def fail() -> dict:
        raise RuntimeError(SECRET_TEXT)

    @app.get("/healthz")
    async def health() -> dict:
        return {"status": "ok"}

    return app, parsed


@pytest.fixture
def guarded():
    app, parsed = make_app(GuardSettings(token_digest("s3cret"), max_body_bytes=1024))
    return TestClient(app, raise_server_exceptions=False), parsed


def test_token_is_checked_before_the_body_is_read(guarded):
    client, parsed = guarded
    malformed = client.post("/v1/echo", content=b'{"text": ', headers={"content-type": "application/json"})
    assert malformed.status_code == 401 and malformed.headers["www-authenticate"] == "Bearer"
    huge = client.post("/v1/echo", content=b"x" * 10_000_000)
    assert huge.status_code == 401                                      # unauthenticated: never read
    wrong = client.post("/v1/echo", json={"text": "hi"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and not parsed
    ok = client.post("/v1/echo", json={"text": "hi"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json() == {"text": "hi"} and len(ok.headers["x-request-id"]) == 16
    assert client.get("/healthz").status_code == 200                   # liveness needs no token


def test_bodies_over_the_limit_get_413_declared_or_streamed(guarded):
    client, parsed = guarded
    auth = {"Authorization": "Bearer s3cret"}
    declared = client.post("/v1/echo", json={"text": "x" * 2000}, headers=auth)
    assert declared.status_code == 413 and "1024 bytes" in declared.json()["detail"]

    def chunks():                                                       # no content-length: streamed
        for _ in range(10):
            yield b"x" * 200

    streamed = client.post("/v1/echo", content=chunks(), headers=auth)
    assert streamed.status_code == 413 and not parsed


def test_a_failure_is_a_500_with_a_request_id_only(guarded, caplog):
    client, _ = guarded
    response = client.post("/v1/fail", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 500
    body = response.json()
    assert body == {"detail": "internal error", "request_id": response.headers["x-request-id"]}
    assert SECRET_TEXT not in response.text
    assert any(body["request_id"] in record.getMessage() for record in caplog.records)   # the log has the id


def test_nothing_passes_before_the_replica_is_ready():
    app, _ = make_app(None)
    response = TestClient(app).post("/v1/echo", json={"text": "hi"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
