"""A campaign's own files in its folder: `campaign.json` (what `resume` needs) and the driver lock.

`campaign.json` holds the validated campaign, the tracking store (its password masked: the full
URI comes from $MLFLOW_TRACKING_URI when the campaign resumes), the artifact root, the frozen
model's fingerprint, and — once the campaign has ended — `finished` and the ensembles built, so a
second `resume` changes nothing. It is written atomically (a temporary file beside the campaign
folder, then one rename), so a crash leaves the old file or the new one, never neither.

The driver lock (`driver.lock`, an fcntl lock held while a driver runs the campaign) keeps a
second driver out, with an error naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from softprompt.store import masked
from softprompt.store.uris import unmasked

from .campaign import Campaign, CampaignError

STATE_FILE = "campaign.json"
LOCK_FILE = "driver.lock"
PENDING_FILE = "mlflow-pending.json"      # trials whose MLflow writes wait for the store (a JSON list)
RETIRED_FIELDS = ("fail_once_at_step",)   # fields older campaign files may hold (always null)


class Stored(NamedTuple):
    """What `campaign.json` holds."""

    campaign: Campaign
    tracking_uri: str                 # in memory: the full URI (with its password, if any)
    artifact_root: str | None
    model_fingerprint: str
    finished: bool = False
    ensembles: tuple[dict, ...] = ()  # what was built when the campaign ended


def write_json_atomically(path: Path, data: Any) -> None:
    """Writes `path` through a temporary file beside its folder (outside folders Ray copies)."""
    staging = path.parent.parent / ".softprompt-staging"
    staging.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", dir=staging)
    with os.fdopen(handle, "w") as file:
        json.dump(data, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def write_state(folder: Path, stored: Stored) -> None:
    write_json_atomically(folder / STATE_FILE, {
        "campaign": stored.campaign.to_dict() | {"tracking_uri": masked(stored.campaign.tracking_uri)},
        "tracking_uri": masked(stored.tracking_uri),
        "artifact_root": stored.artifact_root, "model_fingerprint": stored.model_fingerprint,
        "finished": stored.finished, "ensembles": list(stored.ensembles)})


def read_state(folder: Path) -> Stored:
    """The stored campaign; its tracking URI unmasked from $MLFLOW_TRACKING_URI when it has a password."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except FileNotFoundError:
        raise LookupError(f"no campaign {folder.name!r} in {folder.parent} (launch it first, or pass the --store "
                          "it was launched with)") from None
    except json.JSONDecodeError as error:
        raise CampaignError("name", f"{folder / STATE_FILE} is not valid JSON ({error})") from None
    values = {k: v for k, v in state["campaign"].items() if not (k in RETIRED_FIELDS and v is None)}
    try:
        uri = unmasked(state["tracking_uri"], os.environ.get("MLFLOW_TRACKING_URI"))
    except ValueError as error:
        raise CampaignError("tracking_uri", str(error)) from None
    return Stored(Campaign.model_validate(values), uri, state["artifact_root"], state["model_fingerprint"],
                  bool(state.get("finished", False)), tuple(state.get("ensembles", ())))


@contextlib.contextmanager
def driver_lock(folder: Path) -> Iterator[None]:
    """Holds the campaign's driver lock; a second driver gets a CampaignError naming the holder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise CampaignError("name", f"campaign {folder.name!r} is being run by {holder}; wait for it to "
                                "end, or stop that driver first") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)
