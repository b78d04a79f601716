"""The write at commit: ``SIGNALBUS_DELIVERY = "outbox"`` stores a transaction's events
inside it.

Right before the database commit of a transaction that produced events, :class:`Outbox`
inserts one :data:`~signalbus.outbox.schema.outbox` row per event on the session's own
connection, in one ``executemany``, so the events exist exactly when the change does.
Nothing else is written: which receivers an event goes to is decided by the worker
that delivers it, and a per-receiver row only appears when a receiver needs tracking
on its own (a failure, a retry). On PostgreSQL the same transaction runs
``pg_notify``; the server sends it when, and only when, the transaction commits, which
wakes the workers within milliseconds. Nothing is delivered in the committing process.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigurationError
from ..events import Event, Outgoing
from ..signals import is_stable_name
from . import sql
from .schema import missing_tables_error
from .settings import OutboxSettings, engine_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..runtime import Runtime

__all__ = ["Outbox", "row_key"]

log = logging.getLogger("signalbus")

stamps: list[Callable[[dict[str, Any]], None]] = []
"""Called with each payload about to be stored, in the committing thread: they may add
keys of their own next to the event's (:mod:`signalbus.tracing` adds ``"trace"``);
:meth:`~signalbus.Event.from_dict` ignores them."""


def row_key(event: Event) -> str | None:
    """The ordering key of an event: ``model#pk`` for a row, ``None`` for an emit.

    Events with the same key are delivered to each receiver in commit order. A key
    longer than the column is replaced by a hash of it.
    """
    if event.model is None:
        return None
    key = f"{event.model}#{json.dumps(event.pk, separators=(',', ':'))}"
    if len(key) > 255:
        key = f"{event.model[:180]}#sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return key


class Outbox:
    """``SIGNALBUS_DELIVERY = "outbox"``: events stored with the transaction, delivered
    by the worker (:mod:`signalbus.outbox.worker`)."""

    name = "outbox"
    prepares = True

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = OutboxSettings.from_config(runtime.config)
        self._engine: Engine | None = None
        self._warned: set[tuple[str, str]] = set()

    @property
    def engine(self) -> Engine:
        """The engine the outbox lives on (:func:`engine_of` the runtime), cached."""
        if self._engine is None:
            self._engine = engine_of(self.runtime)
        return self._engine

    def check_receivers(self, signal: str, sender: Any) -> None:
        """Refuse a receiver of ``signal`` without a stable durable name (connected after
        start-up: the runtime refuses the others), which the worker needs to track a
        failed delivery across restarts; warn once about two sharing one name."""
        names: set[str] = set()
        for rec in self.runtime.receivers_for(signal, sender):
            if not is_stable_name(rec.name):
                raise ConfigurationError(
                    f"receiver {rec.name!r} of signal {rec.signal!r} has no stable name, "
                    "which SIGNALBUS_DELIVERY='outbox' needs to track its deliveries "
                    "across restarts. Define it at module level, or give it one with name=..."
                )
            if rec.name in names and (signal, rec.name) not in self._warned:
                self._warned.add((signal, rec.name))
                log.error("two receivers of signal %r share the durable name %r; the outbox "
                          "delivers to the first only. Give each a name of its own with "
                          "name=...", signal, rec.name)
            names.add(rec.name)

    def check(self, items: Sequence[Outgoing]) -> None:
        """:meth:`check_receivers` once per signal and sender of ``items``."""
        checked: set[tuple[str, Any]] = set()
        for sender, event in items:
            if (event.signal, sender) not in checked:
                checked.add((event.signal, sender))
                self.check_receivers(event.signal, sender)

    @staticmethod
    def rows(items: Sequence[Outgoing]) -> Iterator[dict[str, Any]]:
        """The :data:`~signalbus.outbox.schema.outbox` rows of ``items`` (``row_key``,
        ``event_id``, ``payload``), in order, one at a time (a large transaction's rows
        are never all held at once)."""
        for _sender, event in items:
            payload = event.to_dict()
            del payload["attempt"]
            for stamp in stamps:
                stamp(payload)
            yield {"row_key": row_key(event), "event_id": event.id, "payload": payload}

    def store(self, connection: Connection, items: Sequence[Outgoing]) -> None:
        """Insert the rows of ``items`` on ``connection`` (inside its transaction), then
        queue the ``NOTIFY`` on PostgreSQL."""
        if not items:
            return
        self.check(items)
        try:
            sql.insert_events(connection, self.rows(items))
        except sa_exc.DBAPIError as exc:
            if sql.is_missing_table(exc):
                raise missing_tables_error() from exc
            raise
        sql.notify(connection, self.settings)

    # the Backend protocol --------------------------------------------------------------

    def prepare(self, session: Session, events: list[Outgoing]) -> None:
        """Write the transaction's events inside it, right before its commit."""
        self.store(session.connection(), events)

    def committed(self, events: Iterable[Outgoing]) -> None:
        """Nothing to do: the events were stored (and the NOTIFY queued) by :meth:`prepare`."""

    def emit(self, sender: Any, event: Event) -> None:
        """Store an event emitted without a session, in a transaction of its own."""
        with self.engine.begin() as connection:
            self.store(connection, [(sender, event)])
