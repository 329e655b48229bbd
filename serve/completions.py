"""The OpenAI-compatible answers, on a model replica: which ensemble a completion's `model` names,
each prompt as the task's record, and the votes as a `Completion` (the bodies and the error
shape: `openai_api.py`; the routes: `front.py`).

    request = completion_request(state, CompletionRequest(model="rte-b", prompt=[...]))
    admitted, votes = ...                          # answered like any /v1/predict request
    completion("rte-b", admitted.ensemble, votes, truncated)

Every refusal is an HTTPException: unknown model 404, a prompt a two-field task cannot read, an
empty prompt list or `stream` 400 (the front gives them OpenAI's shape).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Sequence

from fastapi import HTTPException

from softprompt.core.tasks import TaskSpec
from softprompt.ensemble.voting import Vote

from .openai_api import ChoiceVotes, Completion, CompletionRequest, ModelCard, ModelList, VoteDetails, VotedChoice
from .schemas import EnsembleRef, PredictRequest
from .state import NotServed, ServedEnsemble, ServeState


def model_list(state: ServeState, *, started: float) -> ModelList:
    """`GET /v1/models`: every served ensemble; `started` when the replica started (Unix seconds)."""
    return ModelList(data=[ModelCard(id=s.name, created=int(started), version=s.version, task=s.task.name,
                                     members=s.members, reference=s.reference) for s in state.ensembles])


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


def completion_request(state: ServeState, request: CompletionRequest) -> PredictRequest:
    """The prediction request a completion's prompts make, for the ensemble it names under `state`."""
    if request.stream:
        raise HTTPException(400, "stream is not supported: the answer is one vote per prompt")
    served = served_model(state, request.model)
    prompts = request.prompts()
    if not prompts:
        raise HTTPException(400, "prompt is an empty list: give at least one prompt")
    records = [prompt_record(served.task, prompt, number) for number, prompt in enumerate(prompts)]
    return PredictRequest(task=served.task.name, inputs=records, ensemble=served.name)


def completion(model: str, served: ServedEnsemble, votes: Sequence[Vote], truncated: Sequence[bool]) -> Completion:
    """The votes [one per prompt] as OpenAI's completion, the vote behind each choice in `softprompt`."""
    predictions = [ChoiceVotes(label=v.label, votes=v.votes, shares=v.shares, members=v.members, truncated=cut,
                               vote_share=v.shares.get(v.label, 0.0)) for v, cut in zip(votes, truncated)]
    return Completion(id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model,
                      system_fingerprint=f"{served.name}:{served.version}",
                      choices=[VotedChoice(text=v.label, index=i) for i, v in enumerate(votes)],
                      softprompt=VoteDetails(task=served.task.name,
                                             ensemble=EnsembleRef(name=served.name, version=served.version),
                                             predictions=predictions))
