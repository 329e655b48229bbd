"""Transfer initialisation (SPoT, Vu et al. 2022): a registered ensemble's prompt as the starting
point of another task's run.

A reference is `NAME[@ALIAS|:VERSION]` (the ensemble's best member: the highest selection metric,
the first on ties) or `NAME[@ALIAS|:VERSION]#K` (member K, counted from 0). Training itself only
ever sees a prompt folder (`init: from_file`, `init_path`): this module turns a reference into one.

    >>> parse_member_reference("rte-ensemble@production#2")
    ('rte-ensemble@production', 2)
    >>> parse_member_reference("rte-ensemble")
    ('rte-ensemble', None)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .manifest import EnsembleError, EnsembleManifest
from .registry import Registry, parse_reference


def parse_member_reference(value: str) -> tuple[str, int | None]:
    """(ensemble reference, member number or None for the best member) of `REFERENCE[#K]`."""
    reference, _, member = value.strip().partition("#")
    if member and not member.isdigit():
        raise EnsembleError(f"malformed member in {value!r}: '#{member}' is not a member number (#0, #1, ...)")
    parse_reference(reference)      # refuses a malformed ensemble reference, naming it
    return reference, int(member) if member else None


def best_member(manifest: EnsembleManifest) -> int:
    """The number of the member with the highest selection metric (the first on ties)."""
    return max(range(len(manifest.members)), key=lambda number: (manifest.members[number].metric, -number))


def fetch_init_prompt(store: Registry, value: str, destination: str | os.PathLike) -> tuple[Path, str]:
    """The prompt `value` names, downloaded as the folder `destination` (replacing one there), and
    what it is (`NAME/VERSION#K`, the exact version and member); EnsembleError when there is none."""
    reference, number = parse_member_reference(value)
    registered = store.resolve_ensemble(reference)
    count = len(registered.manifest.members)
    if number is None:
        number = best_member(registered.manifest)
    elif number >= count:
        raise EnsembleError(f"{value}: ensemble {registered.reference} has members #0 to #{count - 1}")
    destination = Path(destination)
    with tempfile.TemporaryDirectory() as folder:
        fetched = store.fetch_member_prompt(registered, number, folder)
        shutil.rmtree(destination, ignore_errors=True)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(fetched, destination)
    return destination, f"{registered.reference}#{number}"
