"""The OpenAI-compatible face of the server, on the same app, port and bearer token: its bodies
and its error shape (the routes are the front's, `front.py`; the answers the model's, `completions.py`).

    GET  /v1/models        every served ensemble: {"id": NAME, "object": "model", "version", "task", "members"}
    POST /v1/completions   {"model": NAME, "prompt": TEXT | [TEXT, ...]} -> choices[i].text = the voted label

A prompt is the task's text (for a one-field task such as SST-2's `sentence`) or a JSON object
string of the task's fields (`'{"premise": "...", "hypothesis": "..."}'`); a list of prompts is
answered as one request, its inputs batched with everyone else's. The answer's `softprompt` field
carries, per choice, the votes, the vote shares, the winning label's share and each member's
answer; `system_fingerprint` is `NAME:VERSION`, the version that answered.

Errors on these routes have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`:
unknown model 404, a malformed body or prompt 400 (where `/v1/predict` says 422), too many prompts 413 (never a 500 for a client's
mistake). 401 and body-size 413 come earlier, from `guard.Guard`, as on every `/v1/` route.

Light on purpose (fastapi, pydantic and `schemas`): the front imports it and no model code.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schemas import EnsembleRef, Prediction

OPENAI_PATHS = ("/v1/models", "/v1/completions")
OWNER = "softprompt"


class ModelCard(BaseModel):
    id: str = Field(description="The ensemble's name (what `model` names in a completion).")
    object: Literal["model"] = "model"
    created: int = Field(description="When this replica started serving (Unix seconds).")
    owned_by: str = OWNER
    version: str
    task: str
    members: int
    reference: str = Field(description="What the server follows or reloads, e.g. `sst2-ensemble@production`.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionRequest(BaseModel):
    """OpenAI's completion body; sampling options are accepted and ignored (the answer is a vote)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"model": "sst2-ensemble", "prompt": ["a gorgeous, witty film", "dull"]}]})

    model: str = Field(description="A served ensemble's name (see GET /v1/models).")
    prompt: str | list[str] = Field(description="The task's text, or a JSON object string of its fields; a list batches.")
    n: int = Field(1, ge=1, le=1, description="One answer per prompt: the vote.")
    stream: bool = Field(False, description="Not supported: the vote is one answer.")

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class VotedChoice(BaseModel):
    text: str = Field(description="The ensemble's voted label (or voted free-text answer).")
    index: int
    logprobs: None = None
    finish_reason: Literal["stop"] = "stop"


class ChoiceVotes(Prediction):
    vote_share: float = Field(description="The winning label's share of the vote (its probability under the "
                                          "soft or learned vote).")


class VoteDetails(BaseModel):
    task: str
    ensemble: EnsembleRef
    predictions: list[ChoiceVotes] = Field(description="One per choice, in choice order.")


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="`NAME:VERSION`: the ensemble version that answered.")
    choices: list[VotedChoice]
    softprompt: VoteDetails = Field(description="The vote behind each choice.")


ERRORS: dict[int | str, dict] = {400: {}, 401: {}, 404: {}, 413: {}, 503: {}}   # what the routes may answer


# ------------------------------------------------------------------------------- error bodies

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 422: "invalid_request_error", 503: "server_busy"}


def _message(detail: Any) -> tuple[str, str | None]:
    """(message, param) of an HTTPException's detail (a string, or FastAPI-style error dicts)."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        parts, param = [], None
        for error in detail:
            loc = [str(part) for part in error.get("loc", ()) if part != "body"]
            if loc[:1] == ["inputs"]:
                loc[0] = "prompt"
            param = param or (".".join(loc) or None)
            parts.append(f"{'.'.join(loc)}: {error.get('msg', '')}".strip(": "))
        return "; ".join(parts), param
    return str(detail), None


def error_body(status: int, detail: Any) -> dict:
    message, param = _message(detail)
    code = "model_not_found" if status == 404 else None
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


def _is_openai(request: Request) -> bool:
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path in OPENAI_PATHS


def install(api: FastAPI) -> None:
    """Gives errors on the OpenAI routes of `api` OpenAI's shape (other routes keep FastAPI's)."""

    async def on_http_error(request: Request, error: StarletteHTTPException):
        if not _is_openai(request):
            return await http_exception_handler(request, error)
        status = 400 if error.status_code == 422 else error.status_code    # OpenAI: 400 for a bad request
        return JSONResponse(error_body(status, error.detail), status_code=status, headers=getattr(error, "headers", None))

    async def on_invalid_body(request: Request, error: RequestValidationError):
        if not _is_openai(request):
            return await request_validation_exception_handler(request, error)
        return JSONResponse(error_body(400, error.errors()), status_code=400)

    api.add_exception_handler(StarletteHTTPException, on_http_error)
    api.add_exception_handler(RequestValidationError, on_invalid_body)
