"""Starting Ray Serve's HTTP proxy: on a port the caller names, or on a free loopback port.

A port probed free can be taken before Serve binds it (Ray's own processes open ports of their
choosing as they start), so `start_on_free_port` tries another port when the bind fails; a port the
user named fails with `PortInUse`, a message naming it, instead of the proxy actor's traceback.
"""

from __future__ import annotations

import socket
from typing import Callable

BIND_FAILURE = "Failed to bind"     # what Serve's proxy raises when its port is taken


class PortInUse(RuntimeError):
    """Serve could not listen on host:port."""


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the kernel's pick; free is not reserved)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start_http(host: str, port: int) -> None:
    """`serve.start` listening on host:port (Ray already initialised); `PortInUse` when it is taken.
    Serve is left as it is: on a shared cluster it is not this process's to shut down."""
    from ray import serve

    try:
        serve.start(http_options={"host": host, "port": port})
    except Exception as error:
        if BIND_FAILURE not in str(error):
            raise
        raise PortInUse(f"cannot listen on {host}:{port}: the port is in use") from None


def start_on_free_port(host: str = "127.0.0.1", *, attempts: int = 5,
                       choose_port: Callable[[str], int] = free_loopback_port) -> int:
    """`serve.start` on a free port of `host`, another one when a port is taken meanwhile; returns
    the port it listens on. For a Ray of this process's own: a failed start is shut down before
    the next."""
    from ray import serve

    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        port = choose_port(host)
        try:
            start_http(host, port)
        except PortInUse:
            if attempt == attempts:
                raise
            serve.shutdown()
        else:
            return port
    raise AssertionError("not reached: the last attempt returns or raises")
