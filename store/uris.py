"""Where a tracking store is: the URI, its default, where its artifacts go, and how it is shown.

    explicit URI  >  $MLFLOW_TRACKING_URI  >  sqlite:///<storage_path>/mlflow.db

A database store (SQLite, PostgreSQL, ...) keeps artifacts under `<storage_path>/mlartifacts`;
a tracking server (`http(s)://`) keeps its own artifact root. A URI may carry a password
(`postgresql+psycopg://user:PASSWORD@host/db`): it is used to connect and never shown —
`masked` is what logs, files and printed output get.

>>> masked("postgresql+psycopg://ana:s3cret@db.example:5432/mlflow")
'postgresql+psycopg://ana:***@db.example:5432/mlflow'
>>> masked("sqlite:////tmp/runs/mlflow.db")
'sqlite:////tmp/runs/mlflow.db'
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_STORAGE_PATH = "./runs"        # campaigns, the SQLite store and artifacts, unless told otherwise
DEFAULT_DATABASE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
SERVER_SCHEMES = ("http://", "https://", "databricks")
MASK = "***"


def resolve_tracking_uri(explicit: str | None = None, *,
                         storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> str:
    """The tracking URI: `explicit`, else `$MLFLOW_TRACKING_URI`, else an SQLite file under
    `storage_path`. A relative SQLite or folder path is made absolute (processes that open the
    store later, such as Serve replicas, may run in another working directory)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return "sqlite:///" + str(Path(storage_path).resolve() / DEFAULT_DATABASE)
    sqlite = "sqlite:///"
    if uri.startswith(sqlite) and not uri[len(sqlite):].startswith("/"):
        return sqlite + str(Path(uri[len(sqlite):]).resolve())
    if ":" not in uri:   # a bare folder: MLflow's file store
        return str(Path(uri).resolve())
    return uri


def is_uri(value: str) -> bool:
    """Whether a `--store` value is a URI (`sqlite:///...`, `postgresql+psycopg://...`, `http://...`)
    rather than a folder."""
    return "://" in value or value.startswith(("sqlite:", "databricks"))


def parse_store(value: str | None) -> tuple[str, str | None]:
    """`(storage_path, tracking_uri)` for the command line's one store flag, `--store DIR|URI`.

    A folder holds everything: campaigns, the SQLite file and the artifacts (it wins over
    `$MLFLOW_TRACKING_URI`). A URI names the tracking store; campaign folders stay under `./runs`.
    Nothing given: `$MLFLOW_TRACKING_URI` when set, else `./runs` (`tracking_uri` None = that rule).

    >>> parse_store("postgresql+psycopg://ana@db/mlflow")
    ('./runs', 'postgresql+psycopg://ana@db/mlflow')
    >>> parse_store(None)
    ('./runs', None)
    """
    if value is None:
        return DEFAULT_STORAGE_PATH, None
    if is_uri(value):
        return DEFAULT_STORAGE_PATH, value
    return value, "sqlite:///" + str(Path(value).resolve() / DEFAULT_DATABASE)


def default_artifact_root(tracking_uri: str, *, storage_path: str | os.PathLike = DEFAULT_STORAGE_PATH) -> str | None:
    """Where a new experiment's artifacts go: `<storage_path>/mlartifacts` for a database store;
    None (the server's own default) for a tracking server."""
    if tracking_uri.startswith(SERVER_SCHEMES):
        return None
    return (Path(storage_path).resolve() / DEFAULT_ARTIFACTS).as_uri()


def masked(uri: str | None) -> str | None:
    """`uri` with any password replaced by `***` (what may be logged, stored or printed)."""
    if not uri or "@" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def password_of(uri: str | None) -> str | None:
    if not uri or "@" not in uri:
        return None
    return urlsplit(uri).password


def scrubbed(text: str, uri: str | None) -> str:
    """`text` with `uri` and its password (if any) replaced by their masked forms."""
    password = password_of(uri)
    if uri:
        text = text.replace(uri, masked(uri))
    return text.replace(password, MASK) if password else text


_PASSWORD_IN_URI = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@\s]+@")


def without_passwords(text: str) -> str:
    """`text` with the password of every URI in it masked (for messages of unknown origin: a
    driver's error may quote the URI it failed to open).

    >>> without_passwords("cannot open postgresql+psycopg://ana:s3cret@db/mlflow (refused)")
    'cannot open postgresql+psycopg://ana:***@db/mlflow (refused)'
    """
    return _PASSWORD_IN_URI.sub(lambda match: f"{match['head']}:{MASK}@", text)


_KNOWN: dict[str, str] = {}   # masked URI -> full URI, in this process's memory only


def remember(uri: str) -> None:
    """Keeps `uri`'s password in this process's memory, so that an object pickled with the masked
    URI (a Store in Tune's state) can be unpickled here even when the password came from a file
    or an option rather than $MLFLOW_TRACKING_URI."""
    if password_of(uri):
        _KNOWN[masked(uri)] = uri


def unmasked(stored: str, environment: str | None) -> str:
    """The full URI for a masked `stored` one: `environment` (e.g. $MLFLOW_TRACKING_URI) when it
    is the same store with its password, else one this process `remember`s; a URI without a
    mask is returned as it is.

    Raises:
      ValueError: naming the store, when its password is nowhere to be found.
    """
    if masked(stored) != stored or f":{MASK}@" not in stored:
        return stored
    if environment and masked(environment) == stored:
        return environment
    if stored in _KNOWN:
        return _KNOWN[stored]
    raise ValueError(f"the tracking store {stored} needs its password, which softprompt never writes down: "
                     "set MLFLOW_TRACKING_URI to the full URI")


def is_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:")
