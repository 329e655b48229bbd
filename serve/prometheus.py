"""`GET /metrics` on the serving port: the vote figures of every ensemble version, in the
Prometheus text format (as vLLM and TGI expose theirs), from one registry per model replica.

Every series carries `ensemble`, `version` and `replica` (a scrape reaches one replica; with
several, each keeps its own series):

- `softprompt_requests_total{status}`                   prediction and completion requests answered
- `softprompt_request_duration_seconds`                  latency, arrival to answer (histogram)
- `softprompt_predictions_total`                         inputs answered
- `softprompt_vote_share`                                the winning label's share of the vote (histogram)
- `softprompt_split_votes_total`                         predictions on which the members were not unanimous
- `softprompt_member_disagreements_total`                member answers that differed from the vote
- `softprompt_member_agreements_total{member, run_id}`   predictions where this member voted with the vote
- `softprompt_member_agreement_ratio{member, run_id}`    that count over the predictions: a member gone bad falls

The route is the front's (`front.py`), guarded like `/v1/` (bearer token when the server has
one); it answers the page of the model replica it reaches (`VoteMetrics.exposition`).
"""

from __future__ import annotations

from typing import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from softprompt.ensemble.voting import Vote

from .metrics import disagrees

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SHARE_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
VERSION = ("ensemble", "version", "replica")
MEMBER = VERSION + ("member", "run_id")


class VoteMetrics:
    """One replica's registry of vote figures (create inside the replica)."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter("softprompt_requests", "Requests answered.", VERSION + ("status",), registry=registry)
        self.latency = Histogram("softprompt_request_duration_seconds", "Request latency, arrival to answer.",
                                 VERSION, buckets=LATENCY_BUCKETS_S, registry=registry)
        self.predictions = Counter("softprompt_predictions", "Inputs answered.", VERSION, registry=registry)
        self.vote_share = Histogram("softprompt_vote_share", "The winning label's share of the vote.", VERSION,
                                    buckets=SHARE_BUCKETS, registry=registry)
        self.split_votes = Counter("softprompt_split_votes", "Predictions whose members were not unanimous.",
                                   VERSION, registry=registry)
        self.disagreements = Counter("softprompt_member_disagreements",
                                     "Member answers that differed from the vote.", VERSION, registry=registry)
        self.agreements = Counter("softprompt_member_agreements", "Predictions where the member voted with the vote.",
                                  MEMBER, registry=registry)
        self.agreement_ratio = Gauge("softprompt_member_agreement_ratio",
                                     "Share of the predictions where the member voted with the vote.", MEMBER,
                                     registry=registry)
        self._counts: dict[tuple[str, str], list[int]] = {}   # (ensemble, version) -> [predictions, agreements...]

    def request(self, ensemble: str, version: str, status: int, seconds: float, votes: Sequence[Vote] = (),
                run_ids: Sequence[str] = ()) -> None:
        """One answered request; `votes` its predictions, `run_ids` [N] the ensemble's members."""
        labels = (ensemble, version, self.replica)
        self.requests.labels(*labels, str(status)).inc()
        self.latency.labels(*labels).observe(seconds)
        if not votes:
            return
        self.predictions.labels(*labels).inc(len(votes))
        counts = self._counts.setdefault((ensemble, version), [0] * (1 + len(run_ids)))
        counts[0] += len(votes)
        members = [labels + (str(number), run_id) for number, run_id in enumerate(run_ids)]
        for vote in votes:
            self.vote_share.labels(*labels).observe(vote.shares.get(vote.label, 0.0))
            self.split_votes.labels(*labels).inc(len(vote.votes) > 1)
            differing = [disagrees(answer, vote) for answer in vote.members]
            self.disagreements.labels(*labels).inc(sum(differing))
            for number, (member, differs) in enumerate(zip(members, differing)):
                counts[1 + number] += not differs
                self.agreements.labels(*member).inc(not differs)
        for number, member in enumerate(members):
            self.agreement_ratio.labels(*member).set(counts[1 + number] / counts[0])

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

