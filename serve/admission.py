"""Admitting a prediction request BEFORE it joins a batch: size limit, ensemble choice, record
checks and tokenisation. Every refusal is an HTTPException with a 4xx status, so a bad request
never reaches the batched pass (and cannot disturb the others in it).

- more inputs than `max_inputs`                -> 413
- no ensemble loaded for the task (or name)     -> 404
- ensemble named for another task               -> 422
- a record missing a field, or ill-typed        -> 422, `loc` = ["body", "inputs", i, field]
- an input longer than the task's `max_input_tokens`: cut to fit, `"truncated": true` in its prediction
(Malformed JSON and empty `inputs` are refused by FastAPI's own body validation, 422.)
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from fastapi import HTTPException

from softprompt.core.batching import EncodedPair, encode_pair
from softprompt.core.models.base import FrozenModel
from softprompt.core.tasks import TaskDataError

from .schemas import PredictRequest
from .state import NotServed, ServedEnsemble, ServeState, WrongTask


class Admitted(NamedTuple):
    ensemble: ServedEnsemble
    encoded: list[EncodedPair]   # one per input, in request order (`truncated` flags cut inputs)


def _record_errors(served: ServedEnsemble, inputs: list[Mapping[str, Any]]) -> list[dict]:
    """FastAPI-style 422 details, one per bad record, each naming the field when it can."""
    errors = []
    for number, record in enumerate(inputs):
        try:
            served.task.validate_record(record)
        except TaskDataError as error:
            missing = [name for name in served.task.fields if name not in record]
            named = [name for name in served.task.fields if repr(name) in str(error)]
            field = (missing or named or [None])[0]
            loc = ["body", "inputs", number] + ([field] if field else [])
            errors.append({"loc": loc, "msg": str(error), "type": "missing" if missing else "value_error"})
    return errors


def admit(state: ServeState, model: FrozenModel, request: PredictRequest, *, max_inputs: int) -> Admitted:
    """The ensemble that answers `request` and its encoded inputs, or an HTTPException."""
    if len(request.inputs) > max_inputs:
        raise HTTPException(413, f"{len(request.inputs)} inputs in one request; this server accepts at most "
                                 f"{max_inputs} (split the request)")
    try:
        served = state.select(request.task, request.ensemble)
    except NotServed as error:
        raise HTTPException(404, str(error)) from None
    except WrongTask as error:
        raise HTTPException(422, [{"loc": ["body", "ensemble"], "msg": str(error), "type": "value_error"}]) from None
    errors = _record_errors(served, request.inputs)
    if errors:
        raise HTTPException(422, errors)
    task = served.task
    encoded = [encode_pair(model, task.input_text(record), "", max_input_tokens=task.max_input_tokens,
                           max_target_tokens=task.max_target_tokens) for record in request.inputs]
    return Admitted(served, encoded)
