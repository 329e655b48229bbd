"""Following aliases: a replica polls the registry every `interval_s` seconds and, when the alias an
ensemble was served under (`name@production`) points to another version, reloads it through the
deployment's two-phase reload (`SoftPromptServer.reload`): every replica loads the new version
beside the old one, then all swap; requests in flight finish on the version they started with,
and every answer names the version that gave it.

Each replica polls (so a deployment follows while any replica lives); a reload that another
replica already committed finds nothing to change. A reference pinned to a version (`name:3`) is
never moved. A failed poll or reload is logged and retried at the next tick; serving goes on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from softprompt.store import Store, parse_reference

from .state import ServeState

logger = logging.getLogger(__name__)


def followed(state: ServeState) -> list[tuple[str, str, str]]:
    """(name, alias, served version) of every ensemble served under an alias."""
    result = []
    for served in state.ensembles:
        name, alias, version = parse_reference(served.reference)
        if alias and not version:
            result.append((name, alias, served.version))
    return result


async def moved(store: Store, state: ServeState) -> list[str]:
    """Names of the followed ensembles whose alias points elsewhere than the served version."""
    names = []
    for name, alias, version in followed(state):
        now = await asyncio.to_thread(store.alias_version, name, alias)
        if now is not None and now != version:
            names.append(name)
    return names


async def follow_aliases(store: Store, current: Callable[[], ServeState],
                         reload: Callable[[str], Awaitable[object]], *, interval_s: float) -> None:
    """Polls forever (run it as a task): `current()` is the served state, `reload(name)` the reload."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            names = await moved(store, current())
        except Exception:  # noqa: BLE001 - the store is unreachable now: serve on, retry next tick
            logger.warning("following aliases: the registry did not answer", exc_info=True)
            continue
        for name in names:
            try:
                result = await reload(name)
                logger.info("following %s: %s", name, result)
            except Exception as error:  # noqa: BLE001 - HTTPException 409/503 included: the old version stays
                logger.warning("following %s: the reload failed (%s); still serving the old version", name,
                               getattr(error, "detail", error))
