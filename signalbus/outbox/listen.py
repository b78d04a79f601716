"""The LISTEN connection that wakes a worker when a commit stored events.

PostgreSQL sends the ``NOTIFY`` queued by the committing transaction
(:func:`signalbus.outbox.sql.notify`) when it commits; :class:`Listener` holds a
connection of its own in autocommit mode, ``LISTEN``\\ing on the outbox channel, and
waits on its socket (and on a wake-up socket the worker's :meth:`stop` writes to). A
lost connection is reported once and the worker polls until it can listen again.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from typing import Any

from sqlalchemy.engine import Engine

from ..redaction import redact

__all__ = ["Listener", "open_listener"]

log = logging.getLogger("signalbus")


class Listener:
    """A connection LISTENing on the outbox channel (psycopg 3 or psycopg2)."""

    def __init__(self, engine: Engine, channel: str) -> None:
        self.engine = engine
        self.channel = channel
        self.conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.conn.exec_driver_sql(f'LISTEN "{channel}"')
        raw = self.conn.connection.driver_connection
        self.raw: Any = raw
        if callable(getattr(raw, "notifies", None)):
            self.kind = "psycopg"
        elif hasattr(raw, "poll") and isinstance(getattr(raw, "notifies", None), list):
            self.kind = "psycopg2"
        else:
            self.close()
            raise NotImplementedError(f"LISTEN is not supported with {type(raw).__module__}")

    def _take(self) -> int:
        if self.kind == "psycopg":
            return sum(1 for _ in self.raw.notifies(timeout=0))
        self.raw.poll()
        count = len(self.raw.notifies)
        self.raw.notifies.clear()
        return count

    def drain(self) -> Listener | None:
        """Forget the notifications received so far (a claim follows)."""
        try:
            self._take()
            return self
        except Exception as exc:
            return self._lost(exc)

    def wait(self, timeout: float, wake: socket.socket) -> tuple[Listener | None, bool]:
        """Wait up to ``timeout`` for a notification (or ``wake``); whether one came."""
        try:
            ready, _, _ = select.select([self.raw.fileno(), wake], [], [], timeout)
            if wake in ready:
                with contextlib.suppress(OSError):
                    wake.recv(64)
            if self.raw.fileno() in ready:
                return self, self._take() > 0
            return self, False
        except Exception as exc:
            return self._lost(exc), False

    def _lost(self, exc: Exception) -> Listener | None:
        log.warning("signalbus worker: the LISTEN connection failed (%s); polling until it "
                    "is back", redact(str(exc)))
        self.close()
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            # never hand a LISTENing connection back to the pool
            self.conn.invalidate()
            self.conn.close()


def open_listener(engine: Engine, channel: str) -> Listener | None:
    try:
        return Listener(engine, channel)
    except NotImplementedError as exc:
        log.info("signalbus worker: %s; polling instead", exc)
    except Exception as exc:
        log.warning("signalbus worker: cannot LISTEN on %r (%s); polling instead", channel,
                    redact(str(exc)))
    return None
