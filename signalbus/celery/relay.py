"""The relay: turns the outbox's committed deliveries into Celery tasks, after the commit.

One round (:meth:`Relay.run_round`):

1. **Expand.** Claim up to ``SIGNALBUS_OUTBOX_BATCH`` pending events (the outbox's own
   claim: commit order, ``SKIP LOCKED``, an event only when no earlier event of its row
   is pending) and, in the same transaction, write one delivery row per receiver the
   event's signal has in this process and settle the event (``done``). From here on
   every (event, receiver) is a delivery row: what ``status``, ``retry`` and ``replay``
   already work on.
2. **Hand over.** Claim up to a batch of due deliveries that head their (row, receiver)
   chain, leased for ``SIGNALBUS_CELERY_LEASE`` to a hand-over token ``celery:…`` new
   for this round, and commit. Only then send one task per delivery
   (``signalbus.deliver(delivery_id, token, attempt)``). A send that fails hands the
   unsent deliveries back at once.
3. A delivery whose task never reports (a lost message, a broker restarted without
   persistence, a worker killed with its message) is handed over again, under a new
   token, once its lease has lapsed; a copy of the old task still in a queue then finds
   the delivery no longer its own and does nothing.

**Order.** A delivery is handed over only while no earlier delivery of the same row to
the same receiver is pending, so each receiver gets a row's events in commit order
whatever the number of Celery workers; the task that settles a delivery of a row sends
a ``NOTIFY`` so that the relay hands the next one over at once.

**Waking.** ``LISTEN`` on ``SIGNALBUS_OUTBOX_CHANNEL`` (PostgreSQL), polling every
``SIGNALBUS_OUTBOX_POLL`` seconds, and the time the next retry or lease falls due.

Run it with ``flask signalbus relay`` (or ``signalbus relay --app …``); several relays
may run at once. Nothing here imports Celery: the relay is given the Celery app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine

from ..errors import BindingError, ConfigurationError
from ..outbox import schema, sql
from ..outbox.changes import Converter
from ..outbox.daemon import CONNECTION_ERRORS, Stoppable, reconnect_delay
from ..outbox.listen import Listener, open_listener
from ..outbox.settings import OutboxSettings, engine_of, utcnow
from ..redaction import redact
from .backend import CeleryOutbox
from .settings import TASK_NAME, CelerySettings

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["Relay", "RelayStats", "backend_of"]

log = logging.getLogger("signalbus")



@dataclasses.dataclass
class RelayStats:
    """What a :class:`Relay` did (returned by :meth:`Relay.run`)."""

    expanded: int = 0
    """Events turned into delivery rows."""
    deliveries: int = 0
    """Delivery rows written for them."""
    handed_over: int = 0
    """Tasks sent (a delivery handed over again after its lease counts again)."""
    dead: int = 0
    """Event rows that could not be read (``dead``)."""
    broker_errors: int = 0
    """Rounds whose sends failed (their deliveries were handed back)."""
    db_errors: int = 0
    """Rounds that lost the database connection."""
    converted: int = 0
    """Change rows of trigger-captured tables turned into events."""

    def as_dict(self) -> dict[str, int]:
        """The counts as a dict (for ``--json``)."""
        return dataclasses.asdict(self)


class BrokerUnavailable(Exception):  # noqa: N818 - reads as the error it reports
    """Tasks could not be sent; the deliveries were handed back to the outbox."""


def backend_of(runtime: Runtime) -> CeleryOutbox:
    """The runtime's celery backend, or an error naming the setting to change."""
    backend = runtime.backend
    if not isinstance(backend, CeleryOutbox):
        raise ConfigurationError(
            f"SIGNALBUS_DELIVERY is {runtime.settings.delivery!r}; the relay hands the outbox "
            "over to Celery. Set SIGNALBUS_DELIVERY = 'celery'."
        )
    return backend


class Relay(Stoppable):
    """Hands the outbox of one runtime (one app) over to Celery.

    ``celery`` defaults to the Celery app :func:`signalbus.celery.init_celery` gave the
    runtime. ``batch``, ``poll`` and ``lease`` (the hand-over lease) override
    ``SIGNALBUS_OUTBOX_BATCH``, ``SIGNALBUS_OUTBOX_POLL`` and ``SIGNALBUS_CELERY_LEASE``.
    """

    kind = "relay"

    def __init__(self, runtime: Runtime, *, celery: Any = None, engine: Engine | None = None,
                 name: str | None = None, listen: bool = True,
                 handle_signals: bool | None = None, batch: int | None = None,
                 poll: float | None = None, lease: float | None = None) -> None:
        backend = backend_of(runtime)
        self.runtime = runtime
        self.celery = celery if celery is not None else backend.celery
        if self.celery is None:
            raise ConfigurationError(
                "the relay has no Celery app: call signalbus.celery.init_celery(app) (or "
                "init_celery(app, celery=your_celery)) where the app is created."
            )
        overrides: dict[str, Any] = {k: v for k, v in {"batch": batch, "poll": poll}.items()
                                     if v is not None}
        self.settings: OutboxSettings = dataclasses.replace(
            OutboxSettings.from_config(runtime.config), **overrides)
        celery_settings = backend.celery_settings
        if lease is not None:
            celery_settings = dataclasses.replace(celery_settings, lease=lease)
        self.celery_settings: CelerySettings = celery_settings
        self.engine: Engine = engine if engine is not None else engine_of(runtime)
        self.name = name or f"relay:{socket.gethostname()}:{os.getpid()}"
        self.postgres = self.engine.dialect.name == "postgresql"
        self.listen = listen and self.postgres
        self.handle_signals = handle_signals
        self.stats = RelayStats()
        Stoppable.__init__(self)
        self._conn: Connection | None = None
        self._senders: dict[str, Any] = {}
        self._full = False
        self.converter: Converter | None = Converter(runtime, backend) if self.postgres else None
        """Turns the change rows of ``capture="trigger"`` tables into events first."""

    # control ------------------------------------------------------------------------------

    def run(self, *, once: bool = False) -> RelayStats:
        """Hand over until stopped (or, with ``once``, until nothing is due); the counts."""
        handle = self.handle_signals
        if handle is None:
            handle = threading.current_thread() is threading.main_thread()
        restore = self._install_signal_handlers() if handle else None
        listener: Listener | None = None
        failures = 0
        try:
            if not self._wait_for_database(self.engine, self.settings.poll, once,
                                           schema.check):
                return self.stats
            if self.listen and not once:
                self._open_wake()
                listener = open_listener(self.engine, self.settings.channel)
            while not self._stop.is_set():
                if listener is not None:
                    listener = listener.drain()
                try:
                    moved = self.run_round()
                except (*CONNECTION_ERRORS, BrokerUnavailable) as exc:
                    if once:
                        raise
                    failures += 1
                    if isinstance(exc, BrokerUnavailable):
                        self.stats.broker_errors += 1
                    else:
                        self.stats.db_errors += 1
                        self._drop_connection()
                    wait = reconnect_delay(self.settings.poll, failures)
                    log.error("signalbus relay %s: %s (attempt %d), retrying in %.1fs",
                              self.name, redact(str(exc)), failures, wait)
                    self._stop.wait(wait)
                    continue
                failures = 0
                if moved:
                    continue
                if once:
                    break
                timeout = self._next_wait()
                if listener is not None and self._wake is not None:
                    listener, _ = listener.wait(timeout, self._wake[0])
                else:
                    self._stop.wait(timeout)
                if listener is None and self._wake is not None and not self._stop.is_set():
                    listener = open_listener(self.engine, self.settings.channel)
        finally:
            if listener is not None:
                listener.close()
            self._close_wake()
            if restore is not None:
                restore()
            self._drop_connection()
        return self.stats

    # the database ----------------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """The relay's own connection (autocommit; transactions begun explicitly)."""
        if self._conn is None:
            conn = self.engine.connect()
            if self.postgres:
                for key, value in sql.SESSION.items():
                    conn.exec_driver_sql(f"SET {key} TO {value}")
                conn.commit()
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the relay's connection (:meth:`run` does it when it returns; call it after
        driving rounds by hand with :meth:`run_round`)."""
        self._drop_connection()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if conn.in_transaction():
                    conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()

    def _next_wait(self) -> float:
        now = utcnow()
        conn = self.connection
        with conn.begin():
            due = sql.next_due(conn, now)
        wait = self.settings.poll
        if self._full:  # tasks report with a NOTIFY; poll briefly in case one is missed
            wait = min(wait, 0.05)
        if due is not None:
            wait = min(wait, (due - now).total_seconds() + 0.001)
        return max(wait, 0.001)

    # a round -----------------------------------------------------------------------------------

    def run_round(self) -> int:
        """Expand one batch of events and hand over one batch of due deliveries; the number
        of events and deliveries moved."""
        now = utcnow()
        converted = 0
        if self.converter is not None and self.converter.active:
            conn = self.connection
            with conn.begin():
                converted = self.converter.run(conn)
            self.stats.converted += converted
        return converted + self.expand(now) + self.hand_over(now)

    def expand(self, now: dt.datetime) -> int:
        """Turn a batch of pending events into delivery rows (one transaction)."""
        conn = self.connection
        until = now + dt.timedelta(seconds=self.settings.lease)
        with conn.begin():
            events, _ = sql.claim_events(conn, now=now, until=until, by=self.name,
                                         batch=self.settings.batch)
            if not events:
                return 0
            rows: list[dict[str, Any]] = []
            settled: list[int] = []
            for event in events:
                names, error = self._receivers(event.payload)
                if error is not None:
                    message = f"outbox row {event.id} cannot be delivered: {error}"
                    sql.kill_event(conn, event.id, message, now)
                    log.error("signalbus relay %s: %s; it is dead (fix it and `signalbus retry "
                              "--event`, or purge it)", self.name, redact(message))
                    self.stats.dead += 1
                    continue
                payload = event.payload
                rows.extend(sql.new_delivery(event.id, payload["id"], name, payload["signal"],
                                             event.row_key, now) for name in names)
                settled.append(event.id)
            sql.insert_deliveries(conn, rows)
            sql.ack_events(conn, settled, now)
        self.stats.expanded += len(settled)
        self.stats.deliveries += len(rows)
        return len(events)

    def _receivers(self, payload: Any) -> tuple[list[str], str | None]:
        """The durable names of the receivers of a stored event, or what is wrong with it."""
        if not isinstance(payload, dict):
            return [], f"its payload is a JSON {type(payload).__name__}, not an object"
        signal, event_id = payload.get("signal"), payload.get("id")
        if not isinstance(signal, str) or not isinstance(event_id, str):
            return [], "its payload's 'id' and 'signal' must be strings"
        sender = self._sender(payload.get("model"))
        names: list[str] = []
        for rec in self.runtime.receivers_for(signal, sender):
            if rec.name not in names:  # one delivery per durable name
                names.append(rec.name)
        return names, None

    def _sender(self, model: Any) -> Any:
        if not isinstance(model, str):
            return None
        if model not in self._senders:
            from ..bindings import import_model

            try:
                self._senders[model] = import_model(model)
            except BindingError:
                self._senders[model] = None
        return self._senders[model]

    def hand_over(self, now: dt.datetime) -> int:
        """Claim a batch of due deliveries heading their chains under a new token, commit,
        then send their tasks; the number sent. Raises :class:`BrokerUnavailable` after
        handing the unsent ones back."""
        conn = self.connection
        token = f"{sql.HANDOVER_PREFIX}{self.name}:{uuid.uuid4().hex[:12]}"
        until = now + dt.timedelta(seconds=self.celery_settings.lease)
        with conn.begin():
            room = self.celery_settings.max_handed_over - sql.handed_over(conn, now)
            if room <= 0:
                self._full = True
                return 0
            self._full = False
            rows = sql.claim_deliveries(conn, now=now, until=until, by=token,
                                        batch=min(room, self.settings.batch))
        if not rows:
            return 0
        sent = self.send(token, rows)
        if sent < len(rows):
            unsent = [r.id for r in rows[sent:]]
            with conn.begin():
                sql.release(conn, events=[], delivery_ids=unsent, by=token)
            raise BrokerUnavailable(
                f"{len(unsent)} of {len(rows)} tasks could not be sent to the broker; they "
                "stay in the outbox and are handed over when it is back")
        return sent

    def send(self, token: str, rows: Sequence[Any]) -> int:
        """Send one task per claimed delivery (after the claim's commit); how many were
        sent before the broker failed (logged)."""
        sent = 0
        queue = self.celery_settings.queue
        try:
            with self.celery.producer_or_acquire() as producer:
                for row in rows:
                    self.celery.send_task(
                        TASK_NAME, args=(row.id, token, row.attempts + 1), queue=queue,
                        producer=producer, retry=True,
                        retry_policy={"max_retries": 2, "interval_start": 0.1,
                                      "interval_step": 0.5, "interval_max": 1.0})
                    sent += 1
        except Exception as exc:  # kombu's and the transports' errors have no common base
            log.error("signalbus relay %s: sending to the broker failed after %d of %d tasks: "
                      "%s", self.name, sent, len(rows), redact(f"{type(exc).__name__}: {exc}"))
        self.stats.handed_over += sent
        return sent
