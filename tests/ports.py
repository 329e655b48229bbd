"""TCP ports for a subprocess to bind moments later: free now, and from a range that nothing on this
machine takes ports from unasked, so that nothing takes them in between.

A port the kernel picks (bind to port 0) comes from the ephemeral range (`ip_local_port_range`,
32768-60999 by default), which every outgoing connection and every port-0 bind draws from too; Ray's
workers take theirs from 10002-19999 (`ray start`'s worker-port defaults). A port between the two is
taken only by a process that names it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RAY_WORKER_PORTS_END = 19999
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def quiet_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now, between Ray's worker ports and the ephemeral range."""
    # (where the ephemeral range starts lower, ports that are free now, quiet or not)
    candidates = range(RAY_WORKER_PORTS_END + 1, max(_ephemeral_start(), RAY_WORKER_PORTS_END + 10_000))
    chosen: list[int] = []
    for port in random.sample(candidates, k=min(len(candidates), 1000)):
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            return chosen
    raise RuntimeError(f"found {len(chosen)} of {count} free ports on {host} in {candidates}")


def quiet_port(host: str = "127.0.0.1") -> int:
    """One port as `quiet_ports` chooses them."""
    return quiet_ports(1, host)[0]
