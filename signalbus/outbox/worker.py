"""The worker: delivers what :class:`~signalbus.outbox.store.Outbox` stored.

* **Claiming.** Each round claims up to ``SIGNALBUS_OUTBOX_BATCH`` pending events, and
  up to as many due deliveries (retries, deliveries queued behind a retry, replays),
  with ``FOR UPDATE SKIP LOCKED`` and a lease written in the same statement
  (:mod:`signalbus.outbox.sql`), then delivers them outside any transaction.
* **An event** goes to every receiver its signal has in this worker, in registration
  order, sharing one :class:`~signalbus.Event`. When all succeed, the event is
  acknowledged (``done``) with the other successes, in one statement every
  ``SIGNALBUS_OUTBOX_ACK_INTERVAL`` or at the end of the batch. When some fail, the
  event is settled at once, in one transaction, with one delivery row per failed
  receiver: the receivers that succeeded are never run again, the others are retried
  on their own.
* **Order.** An event is not claimed while an earlier event of the same row is
  pending; for a receiver that still has a pending delivery of an earlier event of
  the row, the event does not run but queues a delivery row behind it. So each
  receiver sees the events of one row in commit order, whatever the number of
  workers. A ``dead`` delivery no longer holds the row back.
* **Failures.** Backoff with jitter, ``Retry(after=)`` clamped to the backoff cap,
  ``Permanent`` or ``SIGNALBUS_OUTBOX_MAX_ATTEMPTS`` → ``dead`` with the last error
  (redacted). An event row that cannot be read as an event goes ``dead`` with an
  error saying what is wrong with it, and the worker goes on.
* **Leases.** On PostgreSQL a timer thread acknowledges successes every
  ``ACK_INTERVAL`` and renews the lease every half lease, also while one slow
  receiver runs; a lease found lapsed is logged, and its claims are skipped.
* **Connections.** A worker started while the database is down waits for it, with
  backoff, logging each attempt; a lost connection is reopened the same way, and the
  worker then hands back its own unfinished claims at once.
* **Waking.** ``LISTEN`` on PostgreSQL (:mod:`signalbus.outbox.listen`), polling every
  ``SIGNALBUS_OUTBOX_POLL`` seconds as the fallback and on SQLite (one worker).
* **Stopping.** SIGTERM/SIGINT: the current delivery finishes, its result and the
  batch's successes are recorded, the rest is released. ``once=True`` delivers what
  is due and returns.

This module needs neither Flask nor click: a plain SQLAlchemy app runs
``Worker(bus.runtime()).run()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy.engine import Connection, Engine

from .. import delivery
from ..errors import ConfigurationError
from ..events import Event
from ..redaction import describe_error, redact
from . import retry, schema, sql
from .changes import Converter
from .daemon import CONNECTION_ERRORS, Stoppable, reconnect_delay
from .listen import Listener, open_listener
from .settings import OutboxSettings, engine_of, utcnow

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..signals import Receiver
    from .store import Outbox

__all__ = ["CorruptRow", "ReceiverNotFound", "Worker", "WorkerStats", "drain", "runtime_of",
           "spawn"]

log = logging.getLogger("signalbus")

T = TypeVar("T")


DELIVERIES_EVERY = 0.1
"""Seconds between looks for due deliveries while events keep the worker busy."""


@dataclasses.dataclass
class WorkerStats:
    """What a :class:`Worker` did (returned by :meth:`Worker.run`)."""

    delivered: int = 0
    """Receiver runs that returned (one per (event, receiver))."""
    retried: int = 0
    """Failed deliveries scheduled for another attempt."""
    dead: int = 0
    """Deliveries given up, and event rows that could not be read."""
    deferred: int = 0
    """Deliveries queued behind a pending delivery of an earlier event of the same row."""
    released: int = 0
    """Claims handed back unstarted because the worker was stopped."""
    batches: int = 0
    """Claims that returned at least one event or delivery."""
    woken_by_notify: int = 0
    """Waits ended by a PostgreSQL notification."""
    woken_by_poll: int = 0
    """Waits that ran out (the polling fallback, or a retry falling due)."""
    reconnects: int = 0
    """Times the database connection was lost and opened again."""
    converted: int = 0
    """Change rows of trigger-captured tables turned into events."""

    def as_dict(self) -> dict[str, int]:
        """The counts as a dict (for ``--json``)."""
        return dataclasses.asdict(self)


class ReceiverNotFound(Exception):  # noqa: N818 - reads as the error it reports
    """A stored delivery names a receiver this worker does not have."""


class CorruptRow(Exception):  # noqa: N818 - reads as the error it reports
    """A stored event row cannot be read as an event."""


@dataclasses.dataclass
class _Job:
    kind: str  # "event" or "delivery"
    id: int
    outbox_id: int
    row_key: str | None
    payload: Any
    attempt: int = 1
    receiver: str = ""
    signal: str = ""
    event_id: str = ""


class Worker(Stoppable):
    """Delivers the outbox of one runtime (one app).

    ``runtime`` is the app's :class:`signalbus.runtime.Runtime` (``bus.runtime(app)``, or
    ``bus.runtime()`` for plain SQLAlchemy). ``engine`` defaults to the runtime's
    (:func:`signalbus.outbox.engine_of`). The other keyword arguments override the
    ``SIGNALBUS_OUTBOX_*`` settings: ``batch``, ``lease``, ``poll`` (seconds),
    ``backoff_base``, ``backoff_cap``, ``max_attempts``, ``ack_interval`` (seconds);
    ``listen=False`` turns ``LISTEN`` off (polling only). ``handle_signals`` (default:
    when running in the main thread) installs the SIGTERM/SIGINT handlers for the
    duration of :meth:`run`. Use :meth:`stop` to stop a worker from another thread.
    """

    kind = "worker"

    def __init__(
        self,
        runtime: Runtime,
        *,
        engine: Engine | None = None,
        name: str | None = None,
        listen: bool = True,
        handle_signals: bool | None = None,
        batch: int | None = None,
        lease: float | None = None,
        poll: float | None = None,
        backoff_base: float | None = None,
        backoff_cap: float | None = None,
        max_attempts: int | None = None,
        ack_interval: float | None = None,
    ) -> None:
        if runtime.config.get("SIGNALBUS_DELIVERY", "inline") == "inline":
            raise ConfigurationError(
                "SIGNALBUS_DELIVERY is 'inline': events are delivered at commit and nothing "
                "is stored for a worker. Set SIGNALBUS_DELIVERY = 'outbox' to use the worker."
            )
        self.runtime = runtime
        self.app = runtime.app
        overrides: dict[str, Any] = {k: v for k, v in {
            "batch": batch, "lease": lease, "poll": poll, "backoff_base": backoff_base,
            "backoff_cap": backoff_cap, "max_attempts": max_attempts,
            "ack_interval": ack_interval,
        }.items() if v is not None}
        self.settings: OutboxSettings = dataclasses.replace(
            OutboxSettings.from_config(runtime.config), **overrides)
        self.engine: Engine = engine if engine is not None else engine_of(runtime)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        """The worker's id, written to ``claimed_by``."""
        self.postgres = self.engine.dialect.name == "postgresql"
        self.listen = listen and self.postgres
        self.handle_signals = handle_signals
        self.stats = WorkerStats()
        Stoppable.__init__(self)
        self._conn: Connection | None = None
        self._auto: Connection | None = None
        self._lost_connection = False
        self._lock = threading.RLock()  # the worker's writes, from either thread
        self._acked_events: list[int] = []
        self._acked_deliveries: dict[int, list[int]] = {}  # attempt -> ids
        self._inflight_events: set[int] = set()
        self._inflight_deliveries: set[int] = set()
        self._lost_events: set[int] = set()
        self._lost_deliveries: set[int] = set()
        self._leased_at = 0.0
        self._acked_at = 0.0
        self._senders: dict[str, Any] = {}
        self._receivers: dict[tuple[str, Any], list[Receiver]] = {}
        self._ticker: _Ticker | None = None
        self.converter: Converter | None = (
            Converter(runtime, cast("Outbox", runtime.backend)) if self.postgres else None)
        """Turns the change rows of ``capture="trigger"`` tables into events before each
        claim (PostgreSQL)."""
        self._deliveries_checked_at = -math.inf
        self._found_deliveries = False
        self.heartbeat: Callable[[], None] | None = None
        """Called at every round of :meth:`run` (at least every ``poll`` seconds while
        idle, after every batch while busy): :class:`signalbus.health.Heartbeat`."""

    # control ----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a SIGTERM/SIGINT received)."""
        return self._stop.is_set()

    def run(self, *, once: bool = False) -> WorkerStats:
        """Deliver until stopped (or, with ``once``, until nothing is due); the counts."""
        handle = self.handle_signals
        if handle is None:
            handle = threading.current_thread() is threading.main_thread()
        restore = (self._install_signal_handlers("the current delivery") if handle
                   else None)
        listener: Listener | None = None
        failures = 0
        try:
            if not self._wait_for_database(self.engine, self.settings.poll, once,
                                           self._check):
                return self.stats
            if self.postgres:
                self._ticker = _Ticker(self)
            if self.listen and not once:
                self._open_wake()
                listener = open_listener(self.engine, self.settings.channel)
            while not self._stop.is_set():
                if self.heartbeat is not None:
                    self.heartbeat()
                if listener is not None:
                    listener = listener.drain()
                try:
                    claimed = self.run_batch()
                except CONNECTION_ERRORS as exc:
                    if once:
                        raise
                    failures += 1
                    wait = self._reconnect_delay(failures)
                    log.error("signalbus worker %s: database error (attempt %d), retrying "
                              "in %.1fs: %s", self.name, failures, wait, redact(str(exc)))
                    self._drop_connections()
                    self._stop.wait(wait)
                    continue
                failures = 0
                if claimed:
                    continue
                if once:
                    break
                timeout = self._next_wait()
                if listener is not None and self._wake is not None:
                    listener, notified = listener.wait(timeout, self._wake[0])
                else:
                    notified = False
                    self._stop.wait(timeout)
                if notified:
                    self.stats.woken_by_notify += 1
                elif not self._stop.is_set():
                    self.stats.woken_by_poll += 1
                if listener is None and self._wake is not None and not self._stop.is_set():
                    listener = open_listener(self.engine, self.settings.channel)
        finally:
            if self._ticker is not None:
                self._ticker.close()
                self._ticker = None
            if listener is not None:
                listener.close()
            self._close_wake()
            if restore is not None:
                restore()
            self._close_connections()
        return self.stats

    def _reconnect_delay(self, attempt: int) -> float:
        return reconnect_delay(self.settings.poll, attempt)

    def _check(self, conn: Connection) -> None:
        schema.check(conn)
        if self.converter is not None and self.converter.active:
            self._report_triggers(conn)

    def _report_triggers(self, conn: Connection) -> None:
        """Log each trigger-captured table whose triggers are not as its bindings want."""
        from ..capture.triggers import status

        assert self.converter is not None
        for st in status(conn, list(self.converter.tables(conn).values())):
            if st.state == "missing":
                log.error("signalbus worker %s: table %s is bound with capture='trigger' but "
                          "has no signalbus triggers: its changes are not captured. Run "
                          "'signalbus triggers install' (or the migration from 'signalbus "
                          "triggers sql').", self.name, st.table)
            elif st.state == "differs":
                log.error("signalbus worker %s: the signalbus triggers of table %s differ "
                          "from its bindings (%s). Run 'signalbus triggers install' (or a "
                          "migration from 'signalbus triggers sql').", self.name, st.table,
                          st.installed or "no version recorded")
            elif st.state == "unbound":
                log.warning("signalbus worker %s: table %s has signalbus triggers but no "
                            "capture='trigger' binding in this app; its changes wait in the "
                            "outbox. Bind it, or run 'signalbus triggers uninstall'.",
                            self.name, st.table)

    # connections --------------------------------------------------------------------------

    def _open(self, autocommit: bool) -> Connection:
        conn = self.engine.connect()
        if autocommit:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if self.postgres:
            for key, value in sql.SESSION.items():
                conn.exec_driver_sql(f"SET {key} TO {value}")
            if not autocommit:
                conn.commit()
        return conn

    @property
    def connection(self) -> Connection:
        """The worker's own connection (never used by receivers)."""
        if self._conn is None:
            self._conn = self._open(autocommit=False)
            if self._lost_connection:
                self._lost_connection = False
                self.stats.reconnects += 1
                with self._lock, self._conn.begin():
                    # what succeeded before the loss is recorded, the rest handed back
                    self.flush(self._conn)
                    released = sql.release_all(self._conn, self.name)
                log.warning("signalbus worker %s: connection back; released %d claims it held "
                            "when it was lost", self.name, released)
        return self._conn

    def _write(self, fn: Callable[[Connection], T]) -> T:
        """Run one statement of the worker's bookkeeping and commit it (on PostgreSQL a
        single round trip, on an autocommit connection of its own)."""
        with self._lock:
            if not self.postgres:
                conn = self.connection
                with conn.begin():
                    return fn(conn)
            self.connection  # noqa: B018 - reconnects (and releases) first if needed
            if self._auto is None:
                self._auto = self._open(autocommit=True)
            return fn(self._auto)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        """Run several statements in one transaction."""
        with self._lock:
            conn = self.connection
            with conn.begin():
                return fn(conn)

    def _drop_connections(self) -> None:
        """Forget connections after an error (they are reopened when next needed)."""
        with self._lock:
            for conn in (self._auto, self._conn):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.invalidate()
                    with contextlib.suppress(Exception):
                        conn.close()
            self._auto = self._conn = None
            self._lost_connection = True

    def _close_connections(self) -> None:
        with self._lock:
            for conn in (self._auto, self._conn):
                if conn is None:
                    continue
                with contextlib.suppress(Exception):
                    if self.postgres:
                        if conn.in_transaction():
                            conn.rollback()
                        for key in sql.SESSION:
                            conn.exec_driver_sql(f"RESET {key}")
                        if conn.in_transaction():
                            conn.commit()
                with contextlib.suppress(Exception):
                    conn.close()
            self._auto = self._conn = None

    # a batch ----------------------------------------------------------------------------------

    def run_batch(self) -> int:
        """Claim one batch (events and due deliveries) and deliver it; the number claimed."""
        now = utcnow()
        until = now + dt.timedelta(seconds=self.settings.lease)
        self._leased_at = time.monotonic()
        by, batch = self.name, self.settings.batch
        converter = self.converter
        if converter is not None and converter.active:
            self.stats.converted += self._transaction(converter.run)
        events, blocked = self._write(lambda c: sql.claim_events(c, now=now, until=until,
                                                                 by=by, batch=batch))
        drows: list[Any] = []
        started = time.monotonic()
        # retries and queued deliveries: looked for whenever no event is waiting, and
        # every DELIVERIES_EVERY seconds while events stream in (one round trip saved
        # per batch)
        if not events or self._found_deliveries or \
                started - self._deliveries_checked_at >= DELIVERIES_EVERY:
            drows = self._write(lambda c: sql.claim_deliveries(c, now=now, until=until,
                                                               by=by, batch=batch))
            self._deliveries_checked_at = started
            self._found_deliveries = bool(drows)
        if not events and not drows:
            return 0
        self.stats.batches += 1
        jobs: list[_Job] = []
        if drows:
            stored = self._write(lambda c: sql.payloads(c, (r.outbox_id for r in drows)))
            jobs.extend(_Job("delivery", r.id, r.outbox_id, r.row_key, stored.get(r.outbox_id),
                             r.attempts + 1, r.receiver, r.signal, r.event_id) for r in drows)
        jobs.extend(_Job("event", r.id, r.id, r.row_key, r.payload) for r in events)
        with self._lock:
            self._inflight_events = {r.id for r in events}
            self._inflight_deliveries = {r.id for r in drows}
            self._lost_events.clear()
            self._lost_deliveries.clear()
        self._receivers.clear()
        log.debug("signalbus worker %s claimed %d events and %d deliveries", self.name,
                  len(events), len(drows))
        ticker = self._ticker
        try:
            if ticker is not None:
                ticker.active = True
            self._deliver_jobs(jobs, blocked, ticker)
        finally:
            if ticker is not None:
                ticker.active = False
            with self._lock:
                self._inflight_events.clear()
                self._inflight_deliveries.clear()
        return len(jobs)

    def _deliver_jobs(self, jobs: list[_Job], blocked: set[tuple[str, str]],
                      ticker: _Ticker | None) -> None:
        self._acked_at = acked_at = time.monotonic()
        todo = list(jobs)
        while todo:
            if self._stop.is_set():
                self.flush()
                self._release(todo)
                return
            if ticker is None:  # SQLite: acknowledge and renew between deliveries
                now = time.monotonic()
                if now >= self._leased_at + self.settings.lease / 2:
                    self.flush()
                    self.renew()
                    acked_at = now
                elif now >= acked_at + self.settings.ack_interval:
                    self.flush()
                    acked_at = now
            job = todo.pop(0)
            if self._is_lost(job):
                continue
            try:
                if job.kind == "event":
                    self._run_event(job, blocked)
                else:
                    self._run_delivery(job)
            except BaseException:
                # KeyboardInterrupt, SystemExit, a lost connection: record what is done,
                # hand back what is not
                with contextlib.suppress(Exception):
                    self.flush()
                    self._release([job, *todo])
                raise
        self.flush()

    def _is_lost(self, job: _Job) -> bool:
        with self._lock:
            lost = self._lost_events if job.kind == "event" else self._lost_deliveries
            return job.id in lost

    def _done(self, job: _Job) -> None:
        inflight = self._inflight_events if job.kind == "event" else self._inflight_deliveries
        inflight.discard(job.id)

    # acknowledgements and leases (also called by the timer thread) ---------------------------

    def flush(self, conn: Connection | None = None) -> None:
        """Record the successes not yet recorded (one statement per kind and attempt)."""
        with self._lock:
            self._acked_at = time.monotonic()
            events, self._acked_events = self._acked_events, []
            by_attempt, self._acked_deliveries = self._acked_deliveries, {}
            if not events and not by_attempt:
                return
            now = utcnow()

            def write(c: Connection) -> None:
                sql.ack_events(c, events, now)
                for attempt, ids in by_attempt.items():
                    sql.ack_deliveries(c, ids, attempt, now)

            try:
                if conn is not None:
                    write(conn)
                else:
                    self._write(write)
            except BaseException:
                # kept for the next try (after a reconnect: before the claims are released)
                self._acked_events[:0] = events
                for attempt, ids in by_attempt.items():
                    self._acked_deliveries.setdefault(attempt, [])[:0] = ids
                raise

    def renew(self, conn: Connection | None = None) -> None:
        """Extend the lease of the claims still being worked on; log and skip the ones
        that lapsed and were taken by another worker."""
        with self._lock:
            events = sorted(self._inflight_events)
            dids = sorted(self._inflight_deliveries)
            if not events and not dids:
                return
            started = time.monotonic()
            late = started - self._leased_at > self.settings.lease
            until = utcnow() + dt.timedelta(seconds=self.settings.lease)

            def write(c: Connection) -> tuple[set[int], set[int]]:
                return sql.renew(c, events=events, delivery_ids=dids, by=self.name,
                                 until=until)

            kept_events, kept_deliveries = write(conn) if conn is not None else \
                self._write(write)
            self._leased_at = started
            lost_events = set(events) - kept_events
            lost_deliveries = set(dids) - kept_deliveries
            self._lost_events |= lost_events
            self._lost_deliveries |= lost_deliveries
            self._inflight_events -= lost_events
            self._inflight_deliveries -= lost_deliveries
        if lost_events or lost_deliveries:
            log.warning("signalbus worker %s: the lease of %d events and %d deliveries lapsed "
                        "and another worker took them (they may run twice); raise "
                        "SIGNALBUS_OUTBOX_LEASE above the time a delivery takes", self.name,
                        len(lost_events), len(lost_deliveries))
        elif late:
            log.warning("signalbus worker %s: the lease of its claims lapsed %.1fs before it "
                        "was renewed (no other worker took them); raise SIGNALBUS_OUTBOX_LEASE",
                        self.name, started - self._leased_at)

    def _release(self, jobs: Sequence[_Job]) -> None:
        events = [j.id for j in jobs if j.kind == "event"]
        dids = [j.id for j in jobs if j.kind == "delivery"]
        if not events and not dids:
            return
        with self._lock:
            self._inflight_events.difference_update(events)
            self._inflight_deliveries.difference_update(dids)
            self._write(lambda c: sql.release(c, events=events, delivery_ids=dids,
                                              by=self.name))
        self.stats.released += len(jobs)
        log.info("signalbus worker %s: released %d claims", self.name, len(jobs))

    def _next_wait(self) -> float:
        """Seconds until the next poll: the poll interval, or less if a retry or a lease
        of another worker falls due sooner."""
        now = utcnow()
        due = self._write(lambda c: sql.next_due(c, now))
        wait = self.settings.poll
        if due is not None:
            wait = min(wait, (due - now).total_seconds() + 0.001)
        return max(wait, 0.001)

    # delivering ------------------------------------------------------------------------------

    def _sender(self, model: Any) -> Any:
        if model is None:
            return None
        if not isinstance(model, str):
            raise CorruptRow(f"'model' is {model!r}, not a 'module:Class' string")
        try:
            return self._senders[model]
        except KeyError:
            pass
        from ..bindings import import_model
        from ..errors import BindingError

        try:
            sender: Any = import_model(model)
        except BindingError as exc:
            log.warning("signalbus worker: %s; delivering with sender None", exc)
            sender = None
        self._senders[model] = sender
        return sender

    def _receivers_of(self, signal: str, sender: Any) -> list[Receiver]:
        key = (signal, sender)
        found = self._receivers.get(key)
        if found is None:
            found, names = [], set()
            for rec in self.runtime.receivers_for(signal, sender):
                if rec.name not in names:  # one delivery per durable name
                    names.add(rec.name)
                    found.append(rec)
            self._receivers[key] = found
        return found

    def _read(self, job: _Job) -> tuple[Event, Any]:
        """The event of a job and its sender; :class:`CorruptRow` saying what is wrong."""
        payload = job.payload
        if payload is None:
            raise CorruptRow(f"event row {job.outbox_id} is not in the outbox (was it purged?)")
        if not isinstance(payload, dict):
            raise CorruptRow(f"its payload is a JSON {type(payload).__name__}, not an object")
        missing = [k for k in ("id", "signal", "op", "data", "occurred_at") if k not in payload]
        if missing:
            raise CorruptRow(f"its payload lacks {', '.join(map(repr, missing))}")
        if not isinstance(payload["signal"], str) or not isinstance(payload["id"], str):
            raise CorruptRow("its payload's 'id' and 'signal' must be strings")
        try:
            event = Event.from_dict({**payload, "attempt": job.attempt})
        except Exception as exc:
            raise CorruptRow(f"its payload is not an event ({describe_error(exc, 300)})") \
                from None
        if event.occurred_at.tzinfo is None:
            raise CorruptRow(f"its 'occurred_at' {payload['occurred_at']!r} has no time zone")
        return event, self._sender(payload.get("model"))

    def _context(self) -> contextlib.AbstractContextManager[Any]:
        if self.app is not None:
            return self.app.app_context()  # type: ignore[no-any-return]
        return contextlib.nullcontext()

    def _run_event(self, job: _Job, blocked: set[tuple[str, str]]) -> None:
        now = utcnow()
        try:
            event, sender = self._read(job)
        except CorruptRow as exc:
            error = f"outbox row {job.id} cannot be delivered: {exc}"
            with self._lock:
                self._done(job)
                self._write(lambda c: sql.kill_event(c, job.id, error, now))
            self.stats.dead += 1
            log.error("signalbus worker %s: %s; it is dead (fix it and `signalbus retry "
                      "--event`, or purge it); going on", self.name, redact(error))
            return
        delivery.notify(sender, event)
        if delivery.instruments:
            delivery.loaded(event, job.payload)
        rows: list[dict[str, Any]] = []
        for rec in self._receivers_of(event.signal, sender):
            if job.row_key is not None and (job.row_key, rec.name) in blocked:
                rows.append(sql.new_delivery(job.id, event.id, rec.name, event.signal,
                                             job.row_key, now))
                self.stats.deferred += 1
                continue
            with self._context():
                outcome = delivery.run_receiver(rec, sender, event, retries=True)
            if outcome.ok:
                self.stats.delivered += 1
                continue
            assert outcome.error is not None
            dead, next_at, error = self._failure(outcome, 1, event.signal, event.id, rec.name)
            rows.append(sql.new_delivery(
                job.id, event.id, rec.name, event.signal, job.row_key, utcnow(),
                state=schema.DEAD if dead else schema.PENDING, attempts=1,
                next_attempt_at=next_at, last_error=error))
        with self._lock:
            self._done(job)
            if rows:
                self._transaction(lambda c: self._settle(c, job.id, rows))
            else:
                self._acked_events.append(job.id)

    def _settle(self, conn: Connection, outbox_id: int, rows: list[dict[str, Any]]) -> None:
        sql.settle_event(conn, outbox_id, rows, by=self.name, now=utcnow())

    def _run_delivery(self, job: _Job) -> None:
        try:
            event, sender = self._read(job)
        except CorruptRow as exc:
            self._fail_delivery(job, CorruptRow(f"outbox row {job.outbox_id}: {exc}"),
                                permanent=True, after=None)
            return
        delivery.notify(sender, event)
        if delivery.instruments:
            delivery.loaded(event, job.payload)
        rec = next((r for r in self._receivers_of(job.signal, sender)
                    if r.name == job.receiver), None)
        if rec is None:
            rec = self.runtime.find_receiver(job.signal, job.receiver)
        if rec is None:
            self._fail_delivery(job, ReceiverNotFound(
                f"receiver {job.receiver!r} of signal {job.signal!r} is not connected in "
                f"worker {self.name}: is its plugin installed and enabled here, or was it "
                "renamed? (Its delivery is retried, then dead; `signalbus retry` after "
                "fixing.)"), permanent=False, after=None)
            return
        with self._context():
            outcome = delivery.run_receiver(rec, sender, event, retries=True)
        if outcome.ok:
            self.stats.delivered += 1
            with self._lock:
                self._done(job)
                self._acked_deliveries.setdefault(job.attempt, []).append(job.id)
            return
        assert outcome.error is not None
        self._fail_delivery(job, outcome.error, permanent=outcome.kind == "permanent",
                            after=outcome.after if outcome.kind == "retry" else None)

    def _failure(self, outcome: delivery.Outcome, attempt: int, signal: str, event_id: str,
                 receiver: str) -> tuple[bool, dt.datetime, str]:
        """Whether a failed run is dead, when it is tried next, its stored error; logs."""
        assert outcome.error is not None
        dead = retry.gives_up(self.settings, attempt, permanent=outcome.kind == "permanent")
        wait = 0.0 if dead else retry.delay(
            self.settings, attempt, outcome.after if outcome.kind == "retry" else None)
        error = describe_error(outcome.error)
        delivery.settled(signal, receiver, "dead" if dead else "retried")
        if dead:
            self.stats.dead += 1
            log.error("signalbus: delivery of %s event %s to %s is dead after %d attempt(s): %s",
                      signal, event_id, receiver, attempt, error,
                      extra={"event_id": event_id, "signal": signal, "receiver": receiver})
        else:
            self.stats.retried += 1
            log.info("signalbus: %s event %s to %s: attempt %d in %.2fs", signal, event_id,
                     receiver, attempt + 1, wait,
                     extra={"event_id": event_id, "signal": signal, "receiver": receiver})
        return dead, utcnow() + dt.timedelta(seconds=wait), error

    def _fail_delivery(self, job: _Job, exc: BaseException, *, permanent: bool,
                       after: float | None) -> None:
        outcome = delivery.Outcome("permanent" if permanent else
                                   "retry" if after is not None else "error", exc, after)
        dead, next_at, error = self._failure(outcome, job.attempt, job.signal, job.event_id,
                                             job.receiver)
        now = utcnow()
        with self._lock:
            self._done(job)
            self._write(lambda c: sql.fail_delivery(
                c, job.id, by=self.name, dead=dead, attempts=job.attempt,
                next_attempt_at=next_at, error=error, now=now))


class _Ticker:
    """PostgreSQL: a thread, for the duration of :meth:`Worker.run`, that acknowledges
    successes every ``ACK_INTERVAL`` and renews the lease every half lease while a batch
    is delivered, on a connection of its own (so that a slow receiver delays neither)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.active = False
        self.done = threading.Event()
        self.conn: Connection | None = None
        self.thread = threading.Thread(target=self._loop, name=f"signalbus-acks-{worker.name}",
                                       daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        w = self.worker
        period = max(min(w.settings.ack_interval, w.settings.lease / 4), 0.02)
        failed = False
        while not self.done.wait(period):
            if not self.active:
                continue
            try:
                if self.conn is None:
                    self.conn = w._open(autocommit=True)
                if time.monotonic() >= w._acked_at + w.settings.ack_interval:
                    w.flush(self.conn)
                if time.monotonic() >= w._leased_at + w.settings.lease / 2:
                    w.renew(self.conn)
                failed = False
            except Exception as exc:
                if not failed:
                    log.warning("signalbus worker %s: cannot record acknowledgements now "
                                "(%s); the worker records them itself", w.name,
                                redact(str(exc)))
                failed = True
                if self.conn is not None:
                    with contextlib.suppress(Exception):
                        self.conn.invalidate()
                    self.conn = None

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        if self.conn is not None:
            with contextlib.suppress(Exception):
                for key in sql.SESSION:
                    self.conn.exec_driver_sql(f"RESET {key}")
                self.conn.close()
            self.conn = None


# entry points for code -----------------------------------------------------------------------


def runtime_of(target: Any = None) -> Runtime:
    """The runtime of ``target``: a Flask app, a :class:`~signalbus.SignalBus`, a
    :class:`~signalbus.runtime.Runtime`, or ``None`` (the current app's, else the default
    bus's)."""
    from ..bus import SignalBus
    from ..runtime import Runtime

    if target is None:
        import signalbus

        return signalbus.bus.runtime()
    if isinstance(target, Runtime):
        return target
    if isinstance(target, SignalBus):
        return target.runtime()
    extensions = getattr(target, "extensions", None)
    if isinstance(extensions, dict):
        ext = extensions.get("signalbus")
        if isinstance(ext, SignalBus):
            return ext.runtime(target)
        raise ConfigurationError(
            f"signalbus is not set up on app {getattr(target, 'name', target)!r}: call "
            "signalbus.init_app(app) in the app factory."
        )
    raise ConfigurationError(
        f"cannot find a signalbus runtime in {target!r}: pass a Flask app, a SignalBus or a "
        "Runtime."
    )


def drain(target: Any = None, **options: Any) -> WorkerStats:
    """Deliver everything due now with the real worker code, in this process and thread.

    ``target`` as for :func:`runtime_of`; ``options`` go to :class:`Worker` (``engine``,
    ``max_attempts``, ``backoff_base``…). Deliveries a failure scheduled for later are
    left for later: run it again (or set ``backoff_base=0``) to retry them now. This is
    what the ``signalbus_drain`` pytest fixture calls.
    """
    options.setdefault("handle_signals", False)
    options.setdefault("listen", False)
    return Worker(runtime_of(target), **options).run(once=True)


def spawn(app: str, *args: str, python: str | None = None,
          **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``python -m signalbus worker --app APP [args…]`` as a child process.

    ``app`` is ``"module:factory"`` (a Flask app factory, a Flask app, a
    :class:`~signalbus.SignalBus` or a function returning one); ``args`` are more
    ``worker`` options (``"--once"``, ``"--poll", "0.5"``). Stop it with
    ``proc.terminate()`` (SIGTERM: it finishes the current delivery and releases the
    rest) and ``proc.wait()``. This is how ``make demo DELIVERY=outbox`` starts its worker.
    """
    command = [python or sys.executable, "-m", "signalbus", "worker", "--app", app, *args]
    return subprocess.Popen(command, **popen)

