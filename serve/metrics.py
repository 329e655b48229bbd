"""Observability: Ray Serve metrics (exported to Prometheus by Ray, tagged with deployment,
replica and application) and the per-replica counts `GET /v1/ensembles` reports.

Prometheus names (Ray prefixes `ray_`):
- `softprompt_requests_total{ensemble, version, status}`  requests answered (status: HTTP code)
- `softprompt_predictions_total{ensemble}`               inputs predicted
- `softprompt_member_disagreements_total{ensemble}`      member answers that differed from the vote
- `softprompt_request_latency_ms{ensemble}`              request latency, arrival to response
- `softprompt_batch_inputs` / `softprompt_batch_rows`    inputs and model rows per batched pass
- `softprompt_batch_latency_ms`                          time of one batched pass
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from ray.serve.metrics import Counter, Histogram

from softprompt.core.tasks.metrics import normalize_answer
from softprompt.ensemble.voting import Vote

LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000]
SIZE_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def disagrees(answer: str, vote: Vote) -> bool:
    """A member's answer differs from the vote (compared as the vote compares free text)."""
    return normalize_answer(answer) != normalize_answer(vote.label)


class ServeMetrics:
    """The Prometheus-side metrics of one replica (create inside the replica)."""

    def __init__(self) -> None:
        self.requests = Counter("softprompt_requests", description="Prediction requests answered.",
                                tag_keys=("ensemble", "version", "status"))
        self.predictions = Counter("softprompt_predictions", description="Inputs predicted.",
                                   tag_keys=("ensemble",))
        self.disagreements = Counter("softprompt_member_disagreements",
                                     description="Member answers that differed from the ensemble's vote.",
                                     tag_keys=("ensemble",))
        self.latency = Histogram("softprompt_request_latency_ms", description="Request latency.",
                                 boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("ensemble",))
        self.batch_inputs = Histogram("softprompt_batch_inputs", description="Inputs per batched forward pass.",
                                      boundaries=SIZE_BOUNDARIES)
        self.batch_rows = Histogram("softprompt_batch_rows", description="Model rows (inputs x members) per pass.",
                                    boundaries=SIZE_BOUNDARIES)
        self.batch_latency = Histogram("softprompt_batch_latency_ms", description="Time of one batched pass.",
                                       boundaries=LATENCY_BOUNDARIES_MS)

    def batch(self, inputs: int, rows: int, seconds: float) -> None:
        self.batch_inputs.observe(inputs)
        self.batch_rows.observe(rows)
        self.batch_latency.observe(1000 * seconds)

    def request(self, ensemble: str, version: str, status: int, seconds: float,
                votes: Sequence[Vote] = ()) -> None:
        self.requests.inc(tags={"ensemble": ensemble, "version": version, "status": str(status)})
        self.latency.observe(1000 * seconds, tags={"ensemble": ensemble})
        if votes:
            self.predictions.inc(len(votes), tags={"ensemble": ensemble})
            disagreeing = sum(disagrees(answer, vote) for vote in votes for answer in vote.members)
            if disagreeing:
                self.disagreements.inc(disagreeing, tags={"ensemble": ensemble})


@dataclasses.dataclass
class EnsembleStats:
    """What one replica saw of one ensemble version (mutated only on the replica's event loop)."""

    members: int
    requests: int = 0
    predictions: int = 0
    split_votes: int = 0
    member_disagreements: list[int] = dataclasses.field(default_factory=list)   # [N]

    def record(self, votes: Sequence[Vote]) -> None:
        if not self.member_disagreements:
            self.member_disagreements = [0] * self.members
        self.requests += 1
        self.predictions += len(votes)
        for vote in votes:
            self.split_votes += len(vote.votes) > 1
            for number, answer in enumerate(vote.members):
                self.member_disagreements[number] += disagrees(answer, vote)

    def member_rates(self) -> list[float | None]:
        if not self.predictions:
            return [None] * self.members
        return [count / self.predictions for count in self.member_disagreements]

    @property
    def disagreement_rate(self) -> float | None:
        if not self.predictions:
            return None
        return sum(self.member_disagreements) / (self.predictions * self.members)

    @property
    def split_vote_rate(self) -> float | None:
        return self.split_votes / self.predictions if self.predictions else None
