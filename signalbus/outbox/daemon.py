"""What the outbox worker and the Celery relay share as long-running loops: a stop that
is thread- and signal-safe and wakes a waiting ``select``, SIGTERM/SIGINT handling, the
delay before reconnecting to a database that went away, and the wait for a database that
is down when the loop starts."""

from __future__ import annotations

import contextlib
import logging
import signal as signals_
import socket
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ..redaction import redact

__all__ = ["CONNECTION_ERRORS", "Stoppable", "reconnect_delay"]

CONNECTION_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError)
"""Errors of a database that is down or a connection that was lost: waited out."""

log = logging.getLogger("signalbus")


def reconnect_delay(poll: float, attempt: int) -> float:
    """Seconds before reconnection attempt ``attempt`` (1-based): doubling from the
    polling interval, at most 30 s."""
    return float(min(30.0, max(poll, 0.05) * 2 ** min(attempt - 1, 10)))


class Stoppable:
    """A loop that :meth:`stop` ends after its current step.

    ``_wake`` is a socket pair a waiting ``select`` (the LISTEN connection's wait)
    watches, so that a stop ends the wait at once; open it with :meth:`_open_wake`.
    """

    name: str
    kind: str = "loop"
    """What the loop is called in its log lines (``worker``, ``relay``)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None

    def stop(self) -> None:
        """Ask the loop to stop after its current step (thread- and signal-safe)."""
        self._stop.set()
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                wake[1].send(b"x")

    def _open_wake(self) -> None:
        self._wake = socket.socketpair()
        for sock in self._wake:
            sock.setblocking(False)

    def _close_wake(self) -> None:
        if self._wake is not None:
            for sock in self._wake:
                sock.close()
            self._wake = None

    def _wait_for_database(self, engine: Engine, poll: float, once: bool,
                           check: Callable[[Connection], None]) -> bool:
        """Run ``check`` on a new connection, waiting with backoff while the database is
        down (``once``: raise at once). Whether to go on (``False``: stopped while
        waiting)."""
        attempt = 0
        while True:
            try:
                with engine.connect() as conn:
                    check(conn)
                return True
            except CONNECTION_ERRORS as exc:
                if once:
                    raise
                attempt += 1
                wait = reconnect_delay(poll, attempt)
                log.warning("signalbus %s %s: database unavailable (attempt %d), retrying "
                            "in %.1fs: %s", self.kind, self.name, attempt, wait,
                            redact(str(exc)))
                if self._stop.wait(wait):
                    return False

    def _install_signal_handlers(self, what: str | None = None) -> Callable[[], None]:
        """SIGTERM/SIGINT stop the loop (a second one interrupts it at once); returns
        the function that puts the previous handlers back. ``what``: what the loop
        finishes before stopping, logged at INFO."""
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop now
            if what is not None:
                log.info("signalbus %s %s: %s received; finishing %s", self.kind, self.name,
                         signals_.Signals(signum).name, what)
            self.stop()

        for signum in (signals_.SIGTERM, signals_.SIGINT):
            previous[signum] = signals_.signal(signum, handler)

        def restore() -> None:
            for signum, old in previous.items():
                signals_.signal(signum, old)

        return restore
