"""A tracking store that goes away and comes back, for real: PostgreSQL behind a TCP relay that
the test cuts (every connection closed, the port refused) and restores. The store's user sees ONE
line when the calls start retrying and ONE when the store answers again — no driver traceback."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from softprompt.store import Store


class Relay:
    """127.0.0.1:<port> -> PostgreSQL on 127.0.0.1:5432, with `cut()` and `restore()`."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        for sock in [self._listener, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", 5432))
            self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(postgres_uri, monkeypatch, caplog, capfd):
    monkeypatch.setenv("SOFTPROMPT_STORE_RETRY_S", "30")
    relay = Relay()
    relay.restore()
    uri = postgres_uri.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}").replace("postgres@", "postgres:pw@")
    store = Store(uri)
    experiment = store.prepare_experiment("outage")
    caplog.set_level(logging.DEBUG, logger="softprompt.store.resilience")
    caplog.set_level(logging.WARNING)
    relay.cut()
    threading.Timer(2.0, relay.restore).start()          # back after 2 s
    started = time.monotonic()
    assert store.client.get_experiment(experiment).name == "outage"    # the call rides the outage out
    assert time.monotonic() - started >= 1.5
    relay.cut()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    ours = [r.getMessage() for r in warnings if r.name == "softprompt.store.resilience"]
    assert len(ours) == 2, ours
    assert "does not answer" in ours[0] and "retrying for up to 30 s" in ours[0]
    assert "answers again" in ours[1]
    assert all("pw@" not in line for line in ours)
    assert not [r for r in warnings if r.name != "softprompt.store.resilience"], warnings   # MLflow, SQLAlchemy
    assert "Traceback" not in capfd.readouterr().err
    for name in ("sqlalchemy", "mlflow.store"):                                            # quiet no longer
        assert logging.getLogger(name).level != logging.CRITICAL


@pytest.fixture(autouse=True)
def _no_outage_left():
    yield
    from softprompt.store.resilience import OUTAGE

    assert not OUTAGE.active
