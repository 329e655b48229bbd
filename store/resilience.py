"""Riding out a store that is briefly unavailable: SQLite locked by another process, a database
connection dropped, a tracking server restarting.

- `RetryingClient` wraps `MlflowClient`: a call failing with a transient error is retried with
  exponential backoff for up to `deadline_s`; any other error, or a transient one past the
  deadline, is raised as it came. (MLflow's SQLite sessions already wait 20 s for a lock.)
- `creating_sqlite_store` serialises the creation (schema migrations) of a fresh SQLite database
  across processes: MLflow's migrations race when several processes create one at once.
- `check_reachable` answers in seconds whether a database store accepts connections (MLflow's own
  engine creation retries for ~100 s).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .uris import is_sqlite, masked, scrubbed, without_passwords

logger = logging.getLogger(__name__)

TRANSIENT_MARKERS = ("database is locked", "database table is locked", "could not connect", "connection refused",
                     "server closed the connection", "connection reset", "connection aborted",
                     "temporarily unavailable", "max retries exceeded", "timed out", "bad gateway",
                     "service unavailable", "too many connections")

def _seconds(variable: str, default: float) -> float:
    return float(os.environ.get(variable, default))


def retry_deadline_s() -> float:
    """How long a failing store call is retried ($SOFTPROMPT_STORE_RETRY_S, default 60)."""
    return _seconds("SOFTPROMPT_STORE_RETRY_S", 60)


class StoreUnreachable(RuntimeError):
    """The tracking store does not answer (the message names it, password masked)."""


def store_error_types() -> tuple[type[BaseException], ...]:
    """What a store call may raise besides the library's own errors: MLflow's, SQLAlchemy's and
    StoreUnreachable (for the command line, which names them without importing MLflow itself)."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    return (MlflowException, sqlalchemy.exc.SQLAlchemyError, StoreUnreachable)


def is_transient(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


QUIET_LOGGERS = ("sqlalchemy", "alembic", "mlflow.store", "mlflow.tracking", "psycopg", "urllib3")


class _Outage:
    """This process's view of the store being away: ONE warning when the first call starts
    retrying, ONE line when a call gets through again (or when one gives up); meanwhile the
    database drivers' and MLflow's own loggers stay quiet (their tracebacks say nothing more)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._levels: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return self._since is not None

    def begin(self, store: str, error: BaseException, deadline_s: float) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
            self._levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.CRITICAL)
        logger.warning("the tracking store %s does not answer (%s); retrying for up to %.0f s",
                       store, _reason(error), deadline_s)

    def end(self, store: str, *, gave_up: BaseException | None = None) -> None:
        with self._lock:
            if self._since is None:
                return
            lasted = time.monotonic() - self._since
            self._since = None
            for name, level in self._levels.items():
                logging.getLogger(name).setLevel(level)
        if gave_up is None:
            logger.warning("the tracking store %s answers again (after %.0f s)", store, lasted)
        else:
            logger.warning("the tracking store %s still fails after %.0f s (%s); giving up on this call",
                           store, lasted, _reason(gave_up))


OUTAGE = _Outage()


class _TransientFailures(logging.Filter):
    """Drops what MLflow's database layer logs (with a traceback) about a transient failure before
    it raises it: `retrying` reports the outage in one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return error is None or not is_transient(error)


_FILTERED = ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store")


def quiet_transient_failures() -> None:
    """Installs `_TransientFailures` on MLflow's database loggers (once per process)."""
    for name in _FILTERED:
        target = logging.getLogger(name)
        if not any(isinstance(f, _TransientFailures) for f in target.filters):
            target.addFilter(_TransientFailures())


def _reason(error: BaseException) -> str:
    """The first line of what `error` says (StoreUnreachable's own prefix left out)."""
    text = str(error).strip().splitlines()
    if isinstance(error, StoreUnreachable) and text:
        return without_passwords(text[0].split(": ", 1)[-1])
    return without_passwords(f"{type(error).__name__}: {text[0]}" if text else type(error).__name__)


def retrying(call: Callable, *, deadline_s: float, first_wait_s: float = 0.2, store: str = "") -> Callable:
    """`call` retried on transient errors with exponential backoff until `deadline_s` has passed.
    The outage is reported once (see `_Outage`); `store` names the store in those lines."""

    quiet_transient_failures()

    @functools.wraps(call)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        give_up = time.monotonic() + deadline_s
        wait = first_wait_s
        while True:
            try:
                result = call(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - only transient errors are retried
                if not is_transient(error):
                    raise
                if time.monotonic() + wait > give_up:
                    OUTAGE.end(store, gave_up=error)
                    raise
                OUTAGE.begin(store, error, deadline_s)
                logger.debug("store call %s failed (%s); retrying in %.1f s", getattr(call, "__name__", call),
                             type(error).__name__, wait)
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
            else:
                if OUTAGE.active:
                    OUTAGE.end(store)
                return result

    return wrapped


class RetryingClient:
    """An MlflowClient whose methods retry transient failures (see `retrying`)."""

    def __init__(self, client: Any, *, deadline_s: float | None = None, store: str = "") -> None:
        self._client = client
        self._deadline_s = retry_deadline_s() if deadline_s is None else deadline_s
        self._store = store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        return (retrying(attribute, deadline_s=self._deadline_s, store=self._store) if callable(attribute)
                else attribute)


def sqlite_path(uri: str) -> Path | None:
    """The database file of an SQLite URI (None for other stores)."""
    if not is_sqlite(uri):
        return None
    return Path(uri.split("sqlite:///", 1)[1].split("?", 1)[0])


@contextlib.contextmanager
def creating_sqlite_store(uri: str) -> Iterator[None]:
    """Holds `<database>.lock` while a process creates or migrates an SQLite store."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_reachable(uri: str, *, timeout_s: float = 10.0) -> None:
    """Raises StoreUnreachable unless the store accepts a connection within about `timeout_s`."""
    try:
        if uri.startswith(("http://", "https://")):
            import httpx

            httpx.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
        elif (path := sqlite_path(uri)) is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(path.parent, os.W_OK):
                raise PermissionError(f"{path.parent} is not writable")
        elif "://" in uri and not uri.startswith("file:"):
            import sqlalchemy

            arguments = {"connect_timeout": int(timeout_s)} if uri.startswith(("postgresql", "mysql")) else {}
            engine = sqlalchemy.create_engine(uri, connect_args=arguments, poolclass=sqlalchemy.pool.NullPool)
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
    except Exception as error:  # noqa: BLE001 - whatever the driver raises, the store is not there
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreUnreachable(f"cannot reach the tracking store {masked(uri)}: {scrubbed(reason, uri)}") from None
