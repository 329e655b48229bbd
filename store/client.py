"""The handle on one MLflow store: its client, its experiments, and the paged run query every
layer's reads go through. Runs leave the store as `RunRecord`s — plain values, no MLflow types.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from .names import TAG_CAMPAIGN
from .resilience import RetryingClient, check_reachable, creating_sqlite_store, retry_deadline_s, retrying
from .uris import masked, remember, unmasked

PAGE_SIZE = 1000   # runs per search page (MLflow's own limit is 50,000; pages keep memory flat)


class RunRecord(NamedTuple):
    """One MLflow run as plain values."""

    run_id: str
    experiment_id: str
    name: str
    status: str                  # RUNNING | FINISHED | KILLED | FAILED | SCHEDULED
    start_time: int              # ms since the epoch
    artifact_uri: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]    # each metric's latest value

    @classmethod
    def of(cls, run: Run) -> "RunRecord":
        return cls(run.info.run_id, run.info.experiment_id, run.info.run_name or "", run.info.status,
                   int(run.info.start_time or 0), run.info.artifact_uri, dict(run.data.tags),
                   dict(run.data.params), dict(run.data.metrics))


def quoted(value: Any) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class StoreBase:
    """One MLflow store (`sqlite:///...`, `postgresql+psycopg://...`, `http://...`).

    Args:
      tracking_uri: the store.
      artifact_root: artifact location of experiments this object creates (a folder URI), or None.

    Picklable: only the URI (its password masked) and the artifact root travel; the client is
    rebuilt on first use, the password taken from $MLFLOW_TRACKING_URI (or remembered by this
    process: `uris.remember`). Calls that fail with a
    transient error (SQLite locked, a dropped connection) are retried with backoff.
    """

    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: MlflowClient | None = None
        remember(tracking_uri)

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": masked(self.tracking_uri), "artifact_root": self.artifact_root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        uri = unmasked(state["tracking_uri"], os.environ.get("MLFLOW_TRACKING_URI"))
        self.__init__(uri, artifact_root=state["artifact_root"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({masked(self.tracking_uri)!r})"

    @property
    def display_uri(self) -> str:
        """The URI as it may be shown: any password masked."""
        return masked(self.tracking_uri)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            # a store that is away: our retries, one line (MLflow's own engine creation would retry
            # for ~100 s, a warning with a traceback each time)
            retrying(check_reachable, deadline_s=retry_deadline_s(), store=self.display_uri)(self.tracking_uri)
            with creating_sqlite_store(self.tracking_uri):   # one process at a time migrates a fresh file
                client = MlflowClient(tracking_uri=self.tracking_uri)
                client.search_experiments(max_results=1)
            self._client = RetryingClient(client, store=self.display_uri)
        return self._client

    # Experiments -------------------------------------------------------------------------------

    def prepare_experiment(self, name: str, *, tags: Mapping[str, str] | None = None) -> str:
        """Creates the store (database migrations) and the experiment if missing (restoring a
        deleted one), sets `tags` on it; returns its id. Call in the driver before any trial."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = f"{self.artifact_root.rstrip('/')}/{name}" if self.artifact_root else None
            experiment_id = self.client.create_experiment(name, artifact_location=location,
                                                          tags={TAG_CAMPAIGN: name})
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment_id)
        for key, value in (tags or {}).items():
            self.client.set_experiment_tag(experiment_id, key, value)
        return experiment_id

    def experiment_id(self, name: str) -> str | None:
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else None

    def experiment_ids(self, names: Sequence[str] | None = None) -> list[str]:
        """The ids of the named experiments (every active one when `names` is empty); an unknown
        name is a LookupError naming it."""
        if not names:
            return [e.experiment_id for e in self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        ids = []
        for name in names:
            experiment_id = self.experiment_id(name)
            if experiment_id is None:
                raise LookupError(f"no MLflow experiment named {name!r} in {self.display_uri}")
            ids.append(experiment_id)
        return ids

    # Runs --------------------------------------------------------------------------------------

    def search_runs(self, experiment_ids: Sequence[str], filters: Iterable[str] = ()) -> list[RunRecord]:
        """Every active run of the experiments matching all `filters` (MLflow filter clauses),
        read page by page, oldest first."""
        if not experiment_ids:
            return []
        query = " and ".join(filters)
        records: list[RunRecord] = []
        token = None
        while True:
            page = self.client.search_runs(list(experiment_ids), query, ViewType.ACTIVE_ONLY,
                                           max_results=PAGE_SIZE, order_by=["attributes.start_time ASC"],
                                           page_token=token)
            records += [RunRecord.of(run) for run in page]
            token = page.token
            if not token:
                return records

    def runs_of(self, experiment: str, filters: Iterable[str] = ()) -> list[RunRecord]:
        """`search_runs` in one experiment by name (none when it does not exist)."""
        experiment_id = self.experiment_id(experiment)
        return self.search_runs([experiment_id], filters) if experiment_id else []

    def get_run(self, run_id: str) -> RunRecord:
        return RunRecord.of(self.client.get_run(run_id))

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of one metric, in step order."""
        return sorted((m.step, m.value) for m in self.client.get_metric_history(run_id, key))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def set_status(self, run_id: str, status: str) -> None:
        self.client.update_run(run_id, status=status)
