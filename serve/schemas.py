"""The HTTP API's request and response bodies (pydantic; FastAPI publishes them at `/docs`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """`POST /v1/predict`: records in the task's field names (SST-2: `{"sentence": ...}`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"task": "sst2", "inputs": [{"sentence": "a gorgeous, witty film"}]}]})

    task: str = Field(description="The task's name, e.g. `sst2`, `rte`.")
    inputs: list[dict[str, Any]] = Field(min_length=1, description="One record per prediction.")
    ensemble: str | None = Field(None, description="Which loaded ensemble answers; default: the first "
                                                   "loaded for the task.")


class EnsembleRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    label: str = Field(description="The ensemble's (voted) answer.")
    votes: dict[str, int] = Field(description="Answer -> how many member votes gave it (a member with "
                                               "multiplicity m counts m times; under the learned vote each "
                                               "member counts once).")
    shares: dict[str, float] = Field(description="Answer -> its share of the vote (majority), or its mean "
                                                 "probability over the members (soft vote), or the learned "
                                                 "vote's probability: a confidence.")
    members: list[str] = Field(description="Each member's own answer, in member order.")
    truncated: bool = Field(description="The input was longer than the task's max_input_tokens and was cut.")


class PredictResponse(BaseModel):
    task: str
    ensemble: EnsembleRef
    predictions: list[Prediction]


class MemberInfo(BaseModel):
    run_id: str
    metric: float = Field(description="Its best validation metric (the selection metric).")
    sha256: str
    disagreement_rate: float | None = Field(description="Share of this replica's predictions where this "
                                                        "member's answer differed from the vote.")


class EnsembleInfo(BaseModel):
    name: str
    version: str
    reference: str = Field(description="What a reload re-resolves, e.g. `sst2-ensemble@production`.")
    task: str
    model: str
    model_fingerprint: str
    vote_rule: str
    metric: str
    members: list[MemberInfo]
    requests: int = Field(description="Requests this replica answered with this version.")
    predictions: int
    disagreement_rate: float | None = Field(description="Share of member answers that differed from the vote.")
    split_vote_rate: float | None = Field(description="Share of predictions on which the members were not unanimous.")


class EnsemblesResponse(BaseModel):
    replica: str = Field(description="The replica that answered (counts are per replica).")
    ensembles: list[EnsembleInfo]


class ReloadResponse(BaseModel):
    name: str
    reference: str
    previous_version: str
    version: str
    replicas: int = Field(description="Replicas now serving `version`.")


class Health(BaseModel):
    status: str
    model: str
    ensembles: list[EnsembleRef]
