"""The OpenAI-compatible face of the server, on the same app, port and bearer token:

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

Routes are methods of `OpenAIRoutes`, a base of the deployment class (Ray Serve binds inherited
route methods to the replica); they use its `state`, `model` and `_answer`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Sequence

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from softprompt.core.tasks import TaskSpec
from softprompt.ensemble.voting import Vote

from .schemas import EnsembleRef, Prediction, PredictRequest
from .state import NotServed, ServedEnsemble, ServeState

OPENAI_PATHS = ("/v1/models", "/v1/completions")
OWNER = "softprompt"
router = APIRouter()


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


def served_model(state: ServeState, model: str) -> ServedEnsemble:
    """The served ensemble a completion's `model` names (404 otherwise)."""
    try:
        return state.named(model)
    except NotServed as error:
        raise HTTPException(404, str(error)) from None


def prompt_record(task: TaskSpec, prompt: str, number: int) -> dict[str, Any]:
    """One prompt -> the task's record: a JSON object string as is, else the text of a one-field task.

    >>> from softprompt.core.tasks import get_task
    >>> prompt_record(get_task("sst2"), "a witty film", 0)
    {'sentence': 'a witty film'}
    >>> prompt_record(get_task("rte"), '{"premise": "A cat sat.", "hypothesis": "A cat."}', 0)
    {'premise': 'A cat sat.', 'hypothesis': 'A cat.'}
    """
    if prompt.lstrip().startswith("{"):
        try:
            record = json.loads(prompt)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            return record
    if len(task.fields) == 1:
        return {task.fields[0]: prompt}
    example = json.dumps({name: "..." for name in task.fields})
    raise HTTPException(400, f"prompt {number}: task {task.name!r} takes the fields {', '.join(task.fields)}; "
                             f"give the prompt as a JSON object string, e.g. {example}")


def completion(model: str, served: ServedEnsemble, votes: Sequence[Vote], truncated: Sequence[bool]) -> Completion:
    predictions = [ChoiceVotes(label=v.label, votes=v.votes, shares=v.shares, members=v.members, truncated=cut,
                               vote_share=v.shares.get(v.label, 0.0)) for v, cut in zip(votes, truncated)]
    return Completion(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model,
                      system_fingerprint=f"{served.name}:{served.version}",
                      choices=[VotedChoice(text=v.label, index=i) for i, v in enumerate(votes)],
                      softprompt=VoteDetails(task=served.task.name,
                                             ensemble=EnsembleRef(name=served.name, version=served.version),
                                             predictions=predictions))


ERRORS: dict[int | str, dict] = {400: {}, 401: {}, 404: {}, 413: {}}


class OpenAIRoutes:
    """The OpenAI routes, mixed into the deployment class (needs `state`, `started`, `_answer`)."""

    @router.get("/v1/models", response_model=ModelList, responses={401: {}})
    async def openai_models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=s.name, created=int(self.started), version=s.version, task=s.task.name,
                                         members=s.members, reference=s.reference) for s in self.state.ensembles])

    @router.post("/v1/completions", response_model=Completion, responses=ERRORS)
    async def openai_completions(self, request: CompletionRequest) -> Completion:
        if request.stream:
            raise HTTPException(400, "stream is not supported: the answer is one vote per prompt")
        state = self.state                              # one version for the whole request
        served = served_model(state, request.model)
        prompts = request.prompts()
        if not prompts:
            raise HTTPException(400, "prompt is an empty list: give at least one prompt")
        records = [prompt_record(served.task, prompt, number) for number, prompt in enumerate(prompts)]
        admitted, votes = await self._answer(state, PredictRequest(task=served.task.name, inputs=records,
                                                                   ensemble=served.name))
        return completion(request.model, admitted.ensemble, votes, [pair.truncated for pair in admitted.encoded])


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
    """Adds the routes to `api` and gives errors on them OpenAI's shape (other routes keep FastAPI's)."""
    api.include_router(router)

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
