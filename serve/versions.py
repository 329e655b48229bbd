"""Which version of each ensemble a deployment serves, agreed by all of its replicas.

- At start: the versions the driver resolved once (`softprompt serve`, or the Serve controller
  importing `deploy.py`) travel to every replica in the deployment's init args, so no replica
  resolves an alias on its own.
- After a reload: the new version is written to a small detached actor (the `VersionBook` of
  this deployment and start), which a replica that restarts later reads, so it serves what its
  peers serve, not the version it was first started with.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

from softprompt.store import parse_reference

NAMESPACE = "softprompt"


def book_name(app_name: str, pinned: Sequence[str]) -> str:
    """One book per application and start: a redeploy with other versions starts a new book."""
    digest = hashlib.sha256("\n".join([app_name, *pinned]).encode()).hexdigest()[:16]
    return f"versions-{app_name}-{digest}"


def _book_class():
    import ray

    @ray.remote(num_cpus=0)
    class VersionBook:
        """ensemble name -> version served after the latest reload."""

        def __init__(self) -> None:
            self.versions: dict[str, str] = {}

        def set(self, name: str, version: str) -> None:
            self.versions[name] = version

        def get(self) -> dict[str, str]:
            return dict(self.versions)

    return VersionBook


def reloaded_versions(name: str) -> dict[str, str]:
    """The versions reloads have moved to, from the book `name` (none when it does not exist)."""
    import ray

    try:
        return ray.get(ray.get_actor(name, namespace=NAMESPACE).get.remote())
    except ValueError:
        return {}


def record_reload(name: str, ensemble: str, version: str) -> None:
    """Writes a committed reload into the book `name` (created on first use, outliving replicas)."""
    import ray

    book = _book_class().options(name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote()
    ray.get(book.set.remote(ensemble, version))


def drop_book(name: str) -> None:
    """Removes the book `name` (when its application is deleted)."""
    import ray

    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    except ValueError:
        pass


def apply_reloads(pinned: Sequence[str], reloaded: Mapping[str, str]) -> list[str]:
    """The references to load: the pinned ones, with the versions reloads moved to substituted.

    >>> apply_reloads(["a/1", "b/4", "c@production"], {"b": "6", "c": "2"})
    ['a/1', 'b/6', 'c/2']
    """
    result = []
    for reference in pinned:
        name = parse_reference(reference)[0]
        result.append(f"{name}/{reloaded[name]}" if name in reloaded else reference)
    return result
