"""The outbox worker and the operator's commands (``flask signalbus worker|status|…``).

A :class:`Worker` delivers what :class:`signalbus.outbox.Outbox` stored:

* **Claiming.** It claims up to ``SIGNALBUS_OUTBOX_BATCH`` due deliveries in one short
  transaction (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so any number of
  workers share the work without taking the same row), writing a lease
  (``claimed_until``, ``claimed_by``) on them. It then delivers them outside any
  transaction. A failure is recorded as soon as it happens; successes are
  acknowledged together, in one statement, at the end of the batch or as soon as
  ``SIGNALBUS_OUTBOX_ACK_INTERVAL`` has passed since the last acknowledgement. A
  worker that dies leaves its claims behind; they are claimed again once the lease
  expires, so what it repeats is at most the deliveries it made and had not yet
  acknowledged. The lease is renewed while a long batch is worked through.
* **Order.** A delivery is not claimed while an earlier delivery (by commit order) of
  the same row to the same receiver is still pending, so each receiver sees the
  events of one row in commit order, whatever the number of workers. A ``dead``
  delivery no longer holds the row's later events back. Events of different rows, and
  emitted events (which have no row), are delivered in parallel.
* **Failures.** A receiver that raises is tried again after an exponential backoff
  with jitter; :class:`~signalbus.Retry` ``(after=…)`` sets the delay; the delivery
  is ``dead`` after :class:`~signalbus.Permanent` or ``SIGNALBUS_OUTBOX_MAX_ATTEMPTS``
  attempts, with its last error and attempt count kept. Each (event, receiver) pair
  is tracked on its own: a receiver that succeeded is never run again because another
  receiver of the same event failed.
* **Waking.** On PostgreSQL it ``LISTEN``\\s on ``SIGNALBUS_OUTBOX_CHANNEL`` and is woken
  by the commit's ``NOTIFY``; it also polls every ``SIGNALBUS_OUTBOX_POLL`` seconds,
  in case a notification was missed, and wakes when the next retry is due. SQLite
  has polling only, and supports one worker at a time.
* **Stopping.** SIGTERM or SIGINT: the current delivery finishes, the rest of the batch
  is released for other workers, and :meth:`Worker.run` returns (a second signal
  interrupts the current delivery, which is released too). ``once=True`` (``--once``)
  delivers everything due and returns.

Receivers are called with ``Event.from_dict(...)`` of the stored payload, with
:attr:`~signalbus.Event.attempt` set, and with the model class (imported from
``event.model``) as the sender; in a Flask app, each delivery runs in an app context
of its own.

This module is imported by Flask's CLI at start-up (through :mod:`signalbus.cli`), so
its module-level imports are the standard library, click and SQLAlchemy, which
``import signalbus`` loads anyway.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib
import json
import logging
import os
import random
import re
import select
import signal as signals_
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from .cli import cli

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql import Select
    from sqlalchemy.sql.elements import ColumnElement

    from .events import Event
    from .outbox import OutboxSettings
    from .runtime import Runtime
    from .signals import Receiver

__all__ = ["Worker", "WorkerStats", "drain", "spawn"]

log = logging.getLogger("signalbus")


@dataclasses.dataclass
class WorkerStats:
    """What a :class:`Worker` did (returned by :meth:`Worker.run`)."""

    delivered: int = 0
    """Deliveries whose receiver returned."""
    retried: int = 0
    """Failed deliveries scheduled for another attempt."""
    dead: int = 0
    """Deliveries given up."""
    released: int = 0
    """Claimed deliveries handed back unstarted because the worker was stopped."""
    batches: int = 0
    """Claims that returned at least one delivery."""
    woken_by_notify: int = 0
    """Waits ended by a PostgreSQL notification."""
    woken_by_poll: int = 0
    """Waits that ran out (the polling fallback, or a retry falling due)."""

    def as_dict(self) -> dict[str, int]:
        """The counts as a dict (for ``--json``)."""
        return dataclasses.asdict(self)


_SESSION = {
    # Claims and results need not wait for the WAL flush: if the server loses the last
    # ones in a crash, those deliveries are made again, which at-least-once allows.
    # Receivers' own transactions are not affected.
    "synchronous_commit": "off",
    # The claim's plan, whatever the statistics (see Worker._claim_statement).
    "enable_sort": "off",
    "enable_bitmapscan": "off",
    # The driver prepares statements run often; a generic plan made while the table
    # was small (a seq scan) would be kept however large it grows.
    "plan_cache_mode": "force_custom_plan",
}
"""Settings of the worker's own connections on PostgreSQL (reset when it closes them)."""


@dataclasses.dataclass(frozen=True)
class _Claimed:
    id: int
    event_id: str
    receiver: str
    signal: str
    attempts: int


class ReceiverNotFound(Exception):  # noqa: N818 - reads as the error it reports
    """A stored delivery names a receiver this worker does not have."""


class Worker:
    """Delivers the outbox of one runtime (one app).

    ``runtime`` is the app's :class:`signalbus.bus.Runtime` (``bus.runtime(app)``).
    ``engine`` defaults to the runtime's (:func:`signalbus.outbox.engine_of`). The other
    keyword arguments override the ``SIGNALBUS_OUTBOX_*`` settings: ``batch``,
    ``lease``, ``poll`` (seconds), ``backoff_base``, ``backoff_cap``, ``max_attempts``,
    ``ack_interval`` (seconds);
    ``listen=False`` turns ``LISTEN`` off (polling only). ``handle_signals`` (default:
    when running in the main thread) installs the SIGTERM/SIGINT handlers for the
    duration of :meth:`run` (they only work there). Use :meth:`stop` to stop a worker
    from another thread.
    """

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
        from .errors import ConfigurationError
        from .outbox import OutboxSettings, engine_of

        if runtime.settings.delivery == "inline":
            raise ConfigurationError(
                "SIGNALBUS_DELIVERY is 'inline': events are delivered at commit and nothing "
                "is stored for a worker. Set SIGNALBUS_DELIVERY = 'outbox' to use the worker."
            )
        self.runtime = runtime
        self.app = runtime.app
        settings = OutboxSettings.from_config(runtime.config)
        overrides: dict[str, Any] = {k: v for k, v in {
            "batch": batch, "lease": lease, "poll": poll, "backoff_base": backoff_base,
            "backoff_cap": backoff_cap, "max_attempts": max_attempts,
            "ack_interval": ack_interval,
        }.items() if v is not None}
        self.settings: OutboxSettings = dataclasses.replace(settings, **overrides)
        self.engine: Engine = engine if engine is not None else engine_of(runtime)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        """The worker's id, written to ``claimed_by``."""
        self.listen = listen and self.engine.dialect.name == "postgresql"
        self.handle_signals = handle_signals
        """Install SIGTERM/SIGINT handlers in :meth:`run`; ``None``: if it runs in the
        main thread."""
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._conn: Connection | None = None
        self._auto: Connection | None = None
        self._statements: dict[str, Any] = {}
        self._events: dict[tuple[str, int], Event] = {}
        self._acks: list[tuple[int, int]] = []  # (delivery id, attempt) not yet recorded
        self._senders: dict[str, Any] = {}
        self._receivers: dict[tuple[str, Any], dict[str, Receiver]] = {}
        self._notified: str | None = None

    # control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop after the current delivery (thread- and signal-safe)."""
        self._stop.set()
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                wake[1].send(b"x")

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (or a SIGTERM/SIGINT received)."""
        return self._stop.is_set()

    def run(self, *, once: bool = False) -> WorkerStats:
        """Deliver until stopped (or, with ``once``, until nothing is due); the counts."""
        self._check_tables()
        handle = self.handle_signals
        if handle is None:
            handle = threading.current_thread() is threading.main_thread()
        restore = self._install_signal_handlers() if handle else None
        listener: _Listener | None = None
        if self.listen and not once:
            # lets stop() (a signal handler, another thread) interrupt a select()
            self._wake = socket.socketpair()
            for sock in self._wake:
                sock.setblocking(False)
        try:
            if self._wake is not None:
                listener = _open_listener(self.engine, self.settings.channel)
            while not self._stop.is_set():
                if listener is not None:
                    listener = listener.drain()
                try:
                    claimed = self.run_batch()
                except Exception as exc:
                    from sqlalchemy import exc as sa_exc

                    if once or not isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
                        raise
                    log.error("signalbus worker %s: database error, retrying in %.1fs: %s",
                              self.name, self.settings.poll, exc)
                    self._close_connection()
                    self._stop.wait(self.settings.poll)
                    continue
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
                    listener = _open_listener(self.engine, self.settings.channel)
        finally:
            if listener is not None:
                listener.close()
            if self._wake is not None:
                for sock in self._wake:
                    sock.close()
                self._wake = None
            if restore is not None:
                restore()
            self._close_connection()
        return self.stats

    def _install_signal_handlers(self) -> Callable[[], None]:
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop.is_set():
                raise KeyboardInterrupt  # a second signal: stop now
            log.info("signalbus worker %s: %s received; finishing the current delivery",
                     self.name, signals_.Signals(signum).name)
            self.stop()

        for signum in (signals_.SIGTERM, signals_.SIGINT):
            previous[signum] = signals_.signal(signum, handler)

        def restore() -> None:
            for signum, old in previous.items():
                signals_.signal(signum, old)

        return restore

    # database -----------------------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """The worker's own connection (claims and results; never used by receivers)."""
        if self._conn is None:
            conn = self.engine.connect()
            if conn.dialect.name == "postgresql":
                for name, value in _SESSION.items():
                    conn.exec_driver_sql(f"SET {name} TO {value}")
                conn.commit()
            self._conn = conn
        return self._conn

    def _write(self, statement: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run one statement of the worker's bookkeeping and commit it; its rows.

        On PostgreSQL this is a single round trip on a connection of its own in
        autocommit mode.
        """
        if self.engine.dialect.name != "postgresql":
            with self.connection.begin():
                result = self.connection.execute(statement, params)
                return list(result) if result.returns_rows else []
        if self._auto is None:
            auto = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for name, value in _SESSION.items():
                auto.exec_driver_sql(f"SET {name} TO {value}")
            self._auto = auto
        result = self._auto.execute(statement, params)
        return list(result) if result.returns_rows else []

    def _close_connection(self) -> None:
        if self._auto is not None:
            with contextlib.suppress(Exception):
                for name in _SESSION:
                    self._auto.exec_driver_sql(f"RESET {name}")
                self._auto.close()
            self._auto = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                if self._conn.dialect.name == "postgresql":
                    self._conn.rollback()
                    for name in _SESSION:
                        self._conn.exec_driver_sql(f"RESET {name}")
                    self._conn.commit()
                self._conn.close()
            self._conn = None

    def _check_tables(self) -> None:
        from sqlalchemy import inspect

        from .outbox import _missing_tables_error, deliveries, events

        with self.engine.connect() as conn:
            insp = inspect(conn)
            if not (insp.has_table(deliveries.name) and insp.has_table(events.name)):
                raise _missing_tables_error()

    def run_batch(self) -> int:
        """Claim one batch and deliver it; the number of deliveries claimed."""
        from .outbox import utcnow

        now = utcnow()
        conn = self.connection
        started = time.monotonic()  # the lease runs from `now`, before the statements
        with conn.begin():
            claimed = self._claim(conn, now)
            if not claimed:
                return 0
            ids = sorted({c.event_id for c in claimed})
            payloads: dict[str, dict[str, Any]] = {
                event_id: _json(payload)
                for event_id, payload in conn.execute(self._sql("payloads"), {"ids": ids}).all()
            }
        self.stats.batches += 1
        log.debug("signalbus worker %s claimed %d deliveries in %.3fs: ids %s", self.name,
                  len(claimed), time.monotonic() - started, [c.id for c in claimed])
        self._receivers.clear()
        self._events.clear()
        try:
            self._deliver_batch(claimed, payloads, started)
        finally:
            self._events.clear()
        return len(claimed)

    def _claim(self, conn: Connection, now: dt.datetime) -> list[_Claimed]:
        """Claim up to a batch of due deliveries (:meth:`_claim_statement`) inside the
        caller's transaction, and write the lease on them."""
        claimed = [_Claimed(*row) for row in conn.execute(
            self._sql("claim"), {"now": now, "batch": self.settings.batch}).all()]
        if claimed:
            # the rows are locked by this transaction: no condition to check again
            conn.execute(self._sql("lease"), {
                "ids": [c.id for c in claimed], "by": self.name,
                "until": now + dt.timedelta(seconds=self.settings.lease),
            })
        return claimed

    def _sql(self, name: str) -> Any:
        """The statement ``name`` (``claim``, ``lease``, ``payloads``, ``ack``), built
        once per worker: these run for every batch."""
        try:
            return self._statements[name]
        except KeyError:
            pass
        from sqlalchemy import bindparam, select, update

        from .outbox import DELIVERED, events
        from .outbox import deliveries as d

        if name == "claim":
            statement: Any = self._claim_statement()
        elif name == "lease":
            statement = update(d).where(self._ids_in(d.c.id, "ids")).values(
                claimed_until=bindparam("until"), claimed_by=bindparam("by"))
        elif name == "payloads":
            statement = select(events.c.id, events.c.payload).where(
                self._ids_in(events.c.id, "ids"))
        elif name == "ack":
            statement = update(d).where(self._ids_in(d.c.id, "ids")).values(
                state=DELIVERED, attempts=bindparam("attempt"), claimed_until=None,
                claimed_by=None, updated_at=bindparam("now"),
            )
        else:
            raise KeyError(name)
        self._statements[name] = statement
        return statement

    def _claim_statement(self) -> Select[Any]:
        """The ``SELECT … FOR UPDATE SKIP LOCKED`` of a claim: up to a batch of due
        deliveries, each the oldest pending one of its row for its receiver (the head
        of its chain), in id order.

        It walks the pending deliveries in id order through the partial index
        ``ix_signalbus_deliveries_pending`` and keeps the due ones that head their
        (receiver, row) chain -- no earlier pending delivery of the same chain, which
        the partial index ``ix_signalbus_deliveries_row`` answers with one probe per row
        -- until it has a batch. Its cost is the rows walked, not the backlog: a batch's
        worth, plus the due deliveries that wait behind a head that is claimed or
        waiting for a retry.

        The plan must not depend on statistics, which are often missing (a table just
        filled) or stale (analyzed while nearly every row was delivered, then a burst):
        either way the planner believes pending rows are few. So the only index the
        walk can use in id order is ``ix_signalbus_deliveries_pending``, and on
        PostgreSQL the worker's connection turns off sorts and bitmap scans (which would
        fetch and sort every pending row for each batch); the probe cannot use that
        index (its predicate has a term the probe does not imply) nor the state/age
        index (partial: settled rows only), which leaves ``ix_signalbus_deliveries_row``
        (with a scan of the whole table the only, and much dearer, alternative).
        ``tests/test_outbox_claim.py`` checks the plan with no and with stale statistics.
        """
        from sqlalchemy import bindparam, exists, or_, select

        from .outbox import PENDING, deliveries

        d = deliveries
        earlier = d.alias("earlier")
        now = bindparam("now", type_=d.c.next_attempt_at.type)
        head = ~exists().where(earlier.c.state == PENDING, earlier.c.receiver == d.c.receiver,
                               earlier.c.row_key == d.c.row_key, earlier.c.id < d.c.id)
        return (
            select(d.c.id, d.c.event_id, d.c.receiver, d.c.signal, d.c.attempts)
            .where(d.c.state == PENDING, d.c.next_attempt_at <= now,
                   or_(d.c.claimed_until.is_(None), d.c.claimed_until <= now),
                   or_(d.c.row_key.is_(None), head))
            .order_by(d.c.id)
            .limit(bindparam("batch"))
            .with_for_update(skip_locked=True)
        )

    def _ids_in(self, column: Any, name: str) -> ColumnElement[bool]:
        """``column`` in the list given as parameter ``name``: ``= ANY(:name)`` on
        PostgreSQL (one array parameter: one statement text, whatever the number),
        ``IN (…)`` elsewhere."""
        from sqlalchemy import BigInteger, Text, any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        if self.engine.dialect.name == "postgresql":
            kind = BigInteger if isinstance(column.type, BigInteger) else Text
            return column == any_(bindparam(name, type_=ARRAY(kind)))  # type: ignore[no-any-return]
        return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]

    def _deliver_batch(self, claimed: Sequence[_Claimed],
                       payloads: dict[str, dict[str, Any]], leased_at: float) -> None:
        renew_every = self.settings.lease / 2
        self._notified = None
        self._acks.clear()
        acked_at = time.monotonic()
        todo = list(claimed)
        try:
            while todo:
                if self._stop.is_set():
                    self._flush_acks()
                    self._release(todo)
                    return
                now = time.monotonic()
                if now >= leased_at + renew_every:
                    # half the lease is gone (a slow claim, slow receivers): record what
                    # succeeded, extend the lease of the rest, and go on only with what
                    # is still ours, should it have lapsed meanwhile
                    self._flush_acks()
                    acked_at = leased_at = time.monotonic()
                    todo = self._renew(todo)
                    if not todo:
                        return
                elif self._acks and now >= acked_at + self.settings.ack_interval:
                    # a long batch: do not keep many successes unrecorded
                    self._flush_acks()
                    acked_at = now
                item = todo.pop(0)
                try:
                    self._deliver(item, payloads.get(item.event_id))
                except BaseException:
                    # KeyboardInterrupt, SystemExit: hand back what was not finished
                    self._flush_acks()
                    self._release([item, *todo])
                    raise
            self._flush_acks()
        finally:
            self._acks.clear()

    def _renew(self, items: Sequence[_Claimed]) -> list[_Claimed]:
        """Extend the lease of ``items``; those still claimed by this worker."""
        from sqlalchemy import update

        from .outbox import PENDING, utcnow
        from .outbox import deliveries as d

        now = utcnow()
        kept = {row.id for row in self._write(
            update(d)
            .where(d.c.id.in_([c.id for c in items]), d.c.claimed_by == self.name,
                   d.c.state == PENDING)
            .values(claimed_until=now + dt.timedelta(seconds=self.settings.lease))
            .returning(d.c.id)
        )}
        if len(kept) < len(items):
            log.warning("signalbus worker %s: the lease of %d deliveries lapsed and another "
                        "worker took them; raise SIGNALBUS_OUTBOX_LEASE above the time a "
                        "batch takes", self.name, len(items) - len(kept))
        return [c for c in items if c.id in kept]

    def _release(self, items: Sequence[_Claimed]) -> None:
        from sqlalchemy import update

        from .outbox import deliveries as d
        from .outbox import utcnow

        if not items:
            return
        self._write(
            update(d)
            .where(d.c.id.in_([c.id for c in items]), d.c.claimed_by == self.name)
            .values(claimed_until=None, claimed_by=None, updated_at=utcnow())
        )
        self.stats.released += len(items)
        log.info("signalbus worker %s: released %d claimed deliveries", self.name, len(items))

    def _next_wait(self) -> float:
        """Seconds until the next poll: the poll interval, or less if a retry or a lease
        of another worker falls due sooner."""
        from sqlalchemy import func, select

        from .outbox import PENDING, aware, utcnow
        from .outbox import deliveries as d

        now = utcnow()
        conn = self.connection
        with conn.begin():
            row = conn.execute(
                select(
                    func.min(d.c.next_attempt_at).filter(d.c.next_attempt_at > now),
                    func.min(d.c.claimed_until).filter(d.c.claimed_until > now),
                ).where(d.c.state == PENDING)
            ).one()
        wait = self.settings.poll
        for when in row:
            if when is not None:
                wait = min(wait, (aware(when) - now).total_seconds() + 0.001)
        return max(wait, 0.001)

    # delivering ------------------------------------------------------------------------

    def _sender(self, model: str | None) -> Any:
        if model is None:
            return None
        try:
            return self._senders[model]
        except KeyError:
            pass
        from .bindings import import_model
        from .errors import BindingError

        try:
            sender: Any = import_model(model)
        except BindingError as exc:
            log.warning("signalbus worker: %s; delivering with sender None", exc)
            sender = None
        self._senders[model] = sender
        return sender

    def _receiver(self, signal: str, sender: Any, name: str) -> Receiver | None:
        key = (signal, sender)
        found = self._receivers.get(key)
        if found is None:
            found = {}
            for each in self.runtime.receivers_for(signal, sender):
                found.setdefault(each.name, each)
            self._receivers[key] = found
        rec = found.get(name)
        return rec if rec is not None else self.runtime.find_receiver(signal, name)

    def _context(self) -> contextlib.AbstractContextManager[Any]:
        if self.app is not None:
            return self.app.app_context()  # type: ignore[no-any-return]
        return contextlib.nullcontext()

    def _deliver(self, item: _Claimed, payload: dict[str, Any] | None) -> None:
        from . import delivery
        from .events import Event

        attempt = item.attempts + 1
        if payload is None:
            self._failed(item, attempt, LookupError(
                f"event {item.event_id} is not in the events table (was it purged?)"),
                permanent=True)
            return
        event = self._events.get((item.event_id, attempt))
        if event is None:  # the receivers of one event share it, as inline
            event = Event.from_dict({**payload, "attempt": attempt})
            self._events[(item.event_id, attempt)] = event
        sender = self._sender(event.model)
        rec = self._receiver(item.signal, sender, item.receiver)
        if self._notified != item.event_id:
            self._notified = item.event_id
            delivery.notify(sender, event)
        if rec is None:
            exc = ReceiverNotFound(
                f"receiver {item.receiver!r} of signal {item.signal!r} is not connected in "
                f"worker {self.name}: is its plugin installed and enabled here, or was it "
                "renamed? (Its deliveries are retried, then dead; `signalbus retry` after "
                "fixing.)"
            )
            self._failed(item, attempt, exc)
            return
        with self._context():
            outcome = delivery.run_receiver(rec, sender, event, retries=True)
        if outcome.kind == "retry":
            self._failed(item, attempt, outcome.error, after=outcome.after)  # type: ignore[arg-type]
            return
        if outcome.error is not None:
            self._failed(item, attempt, outcome.error, permanent=outcome.kind == "permanent")
            return
        self._succeeded(item, attempt)

    def _succeeded(self, item: _Claimed, attempt: int) -> None:
        # recorded by _flush_acks, with the other successes of the batch
        self._acks.append((item.id, attempt))

    def _flush_acks(self) -> None:
        """Record the successes not yet recorded: one statement per attempt number
        (nearly always one), ``WHERE id = ANY(:ids)`` on PostgreSQL, ``IN`` elsewhere."""
        if not self._acks:
            return
        from .outbox import utcnow

        by_attempt: dict[int, list[int]] = {}
        for delivery_id, attempt in self._acks:
            by_attempt.setdefault(attempt, []).append(delivery_id)
        now = utcnow()
        for attempt, ids in by_attempt.items():
            self._write(self._sql("ack"), {"ids": ids, "attempt": attempt, "now": now})
        self.stats.delivered += len(self._acks)
        self._acks.clear()

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential,
        capped, with up to half of it taken off at random (equal jitter)."""
        s = self.settings
        delay = min(s.backoff_cap, s.backoff_base * 2.0 ** (attempt - 1))
        return delay - random.uniform(0, delay / 2)

    def _failed(self, item: _Claimed, attempt: int, exc: BaseException, *,
                permanent: bool = False, after: float | None = None) -> None:
        from sqlalchemy import update

        from .outbox import DEAD, PENDING, describe_error, utcnow
        from .outbox import deliveries as d

        now = utcnow()
        dead = permanent or attempt >= self.settings.max_attempts
        delay = 0.0 if dead else (max(0.0, after) if after is not None else self.backoff(attempt))
        self._write(
            update(d).where(d.c.id == item.id, d.c.claimed_by == self.name).values(
                state=DEAD if dead else PENDING,
                attempts=attempt,
                next_attempt_at=now + dt.timedelta(seconds=delay),
                last_error=describe_error(exc),
                claimed_until=None,
                claimed_by=None,
                updated_at=now,
            )
        )
        if dead:
            self.stats.dead += 1
            log.error("signalbus: delivery of %s event %s to %s is dead after %d attempt(s): %s",
                      item.signal, item.event_id, item.receiver, attempt, describe_error(exc))
        else:
            self.stats.retried += 1
            log.info("signalbus: %s event %s to %s: attempt %d in %.2fs", item.signal,
                     item.event_id, item.receiver, attempt + 1, delay)


def _json(value: Any) -> Any:
    # the JSON column type gives a dict back; a driver without JSON support, a string
    return json.loads(value) if isinstance(value, str | bytes) else value


# LISTEN ------------------------------------------------------------------------------------


class _Listener:
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

    def drain(self) -> _Listener | None:
        """Forget the notifications received so far (a claim follows)."""
        try:
            self._take()
            return self
        except Exception as exc:
            return self._lost(exc)

    def wait(self, timeout: float, wake: socket.socket) -> tuple[_Listener | None, bool]:
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

    def _lost(self, exc: Exception) -> _Listener | None:
        log.warning("signalbus worker: the LISTEN connection failed (%s); polling until it "
                    "is back", exc)
        self.close()
        return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            # never hand a LISTENing connection back to the pool
            self.conn.invalidate()
            self.conn.close()


def _open_listener(engine: Engine, channel: str) -> _Listener | None:
    try:
        return _Listener(engine, channel)
    except NotImplementedError as exc:
        log.info("signalbus worker: %s; polling instead", exc)
    except Exception as exc:
        log.warning("signalbus worker: cannot LISTEN on %r (%s); polling instead", channel, exc)
    return None


# entry points for code -----------------------------------------------------------------------


def runtime_of(target: Any = None) -> Runtime:
    """The runtime of ``target``: a Flask app, a :class:`~signalbus.SignalBus`, a
    :class:`~signalbus.bus.Runtime`, or ``None`` (the current app's, else the default
    bus's)."""
    from .bus import SignalBus
    from .errors import ConfigurationError
    from .runtime import Runtime

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


# the operator's commands ------------------------------------------------------------------


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` as a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise click.BadParameter(
            f"{text!r} is not a duration; write a number of seconds or e.g. 90s, 15m, 12h, 7d."
        )
    unit = (match.group(2) or "s").lower()
    return dt.timedelta(seconds=float(match.group(1)) * _UNITS[unit])


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (UTC if it has no offset), or a duration meaning that long ago."""
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2024-05-01T12:00) nor a duration "
            "meaning 'that long ago' (2h, 7d)."
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _import_target(path: str) -> Any:
    """``module:attr`` imported (with the working directory on ``sys.path``, as Flask)."""
    module_name, _, attr = path.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.ClickException(
            f"cannot import {module_name!r} (from --app {path!r}): {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise click.ClickException(
                f"module {module_name!r} has no attribute {attr!r} (from --app {path!r})."
            ) from None
    return obj


def _load(ctx: click.Context, app_import: str | None) -> tuple[Runtime, Any]:
    """The runtime the command works on, and its Flask app (or ``None``)."""
    from flask.cli import ScriptInfo

    from .bus import SignalBus
    from .errors import ConfigurationError
    from .runtime import Runtime

    info = ctx.find_object(ScriptInfo)
    path = app_import or (info.app_import_path if info is not None else None)
    target: Any = None
    if not app_import and info is not None and info._loaded_app is not None:
        target = info.load_app()  # Flask's CLI has loaded it already
    elif path and ":" in path and "(" not in path:
        # our own lookup, which also accepts a plain-SQLAlchemy SignalBus or Runtime
        target = _import_target(path)
        if not isinstance(target, SignalBus | Runtime) and callable(target) \
                and not hasattr(target, "extensions"):
            target = target()
    else:
        if app_import or info is None:
            info = ScriptInfo(app_import_path=app_import)
        target = info.load_app()
    try:
        runtime = runtime_of(target)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    return runtime, runtime.app


@contextlib.contextmanager
def _opened(app_import: str | None) -> Iterator[Runtime]:
    runtime, app = _load(click.get_current_context(), app_import)
    if app is not None:
        with app.app_context():
            yield runtime
    else:
        yield runtime


def _engine(runtime: Runtime) -> Engine:
    from .errors import ConfigurationError
    from .outbox import engine_of

    try:
        return engine_of(runtime)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


def _notify(conn: Connection, runtime: Runtime) -> None:
    from .outbox import OutboxSettings, notify

    notify(conn, OutboxSettings.from_config(runtime.config))


_app_option = click.option(
    "--app", "app_import", metavar="IMPORT", default=None,
    help="The app: 'module:factory' (Flask app factory), 'module:app', or a plain "
         "SQLAlchemy 'module:bus' (a SignalBus) or function returning one. Default: "
         "Flask's --app / FLASK_APP.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


@cli.command("worker", with_appcontext=False)
@click.option("--once", is_flag=True, help="Deliver everything due, then exit.")
@click.option("--batch", type=click.IntRange(min=1), help="Deliveries claimed at once.")
@click.option("--poll", type=click.FloatRange(min=0.01), help="Seconds between polls.")
@click.option("--lease", type=click.FloatRange(min=0.1), help="Seconds a claim lasts.")
@click.option("--name", help="This worker's id in claimed_by (default host:pid).")
@click.option("--no-listen", is_flag=True, help="Poll only; no PostgreSQL LISTEN.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@_json_option
@_app_option
def worker_command(once: bool, batch: int | None, poll: float | None, lease: float | None,
                   name: str | None, no_listen: bool, log_level: str, as_json: bool,
                   app_import: str | None) -> None:
    """Deliver the outbox: run until SIGTERM/SIGINT, or with --once until nothing is due."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(log_level.upper())
    with _opened(app_import) as runtime:
        from .errors import ConfigurationError

        if runtime.settings.delivery != "outbox":
            raise click.ClickException(
                f"SIGNALBUS_DELIVERY is {runtime.settings.delivery!r}; the worker delivers "
                "the outbox. Set SIGNALBUS_DELIVERY = 'outbox'."
            )
        try:
            worker = Worker(runtime, engine=_engine(runtime), name=name, listen=not no_listen,
                            batch=batch, poll=poll, lease=lease)
            how = (f"LISTEN {worker.settings.channel!r}, " if worker.listen else "") + \
                f"poll every {worker.settings.poll:g}s"
            log.info("signalbus worker %s started on %s (%s)", worker.name,
                     worker.engine.dialect.name, "once" if once else how)
            stats = worker.run(once=once)
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        _echo_json(stats.as_dict())
    else:
        click.echo(f"signalbus worker {worker.name}: delivered {stats.delivered}, retrying "
                   f"{stats.retried}, dead {stats.dead}, released {stats.released}")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def outbox_status(conn: Connection, *, dead_limit: int = 10) -> dict[str, Any]:
    """What ``status`` reports, as a dict (the ``--json`` output)."""
    from sqlalchemy import func, select

    from .outbox import DEAD, DELIVERED, PENDING, aware, deliveries, events, utcnow

    d = deliveries
    now = utcnow()
    states = {PENDING: 0, DELIVERED: 0, DEAD: 0}
    per_signal: dict[str, dict[str, int]] = {}
    for signal, state, count in conn.execute(
        select(d.c.signal, d.c.state, func.count()).group_by(d.c.signal, d.c.state)
        .order_by(d.c.signal)
    ):
        states[state] = states.get(state, 0) + count
        per_signal.setdefault(signal, {PENDING: 0, DELIVERED: 0, DEAD: 0})[state] = count
    pending = d.c.state == PENDING
    oldest, due, claimed = conn.execute(
        select(
            func.min(d.c.created_at),
            func.count().filter(d.c.next_attempt_at <= now),
            func.count().filter(d.c.claimed_until > now),
        ).where(pending)
    ).one()
    dead = [
        {"event_id": r.event_id, "signal": r.signal, "receiver": r.receiver,
         "attempts": r.attempts, "last_error": r.last_error,
         "updated_at": aware(r.updated_at).isoformat()}
        for r in conn.execute(
            select(d.c.event_id, d.c.signal, d.c.receiver, d.c.attempts, d.c.last_error,
                   d.c.updated_at)
            .where(d.c.state == DEAD).order_by(d.c.updated_at.desc()).limit(dead_limit)
        )
    ]
    return {
        "database": conn.dialect.name,
        "events": conn.execute(select(func.count()).select_from(events)).scalar_one(),
        "deliveries": states,
        "due": due,
        "claimed": claimed,
        "oldest_pending_age_seconds": (
            round((now - aware(oldest)).total_seconds(), 3) if oldest is not None else None
        ),
        "signals": per_signal,
        "dead": dead,
    }


@cli.command("status", with_appcontext=False)
@_json_option
@_app_option
def status_command(as_json: bool, app_import: str | None) -> None:
    """Show the outbox: deliveries per state and per signal, the oldest pending, the dead."""
    with _opened(app_import) as runtime, _engine(runtime).connect() as conn:
        report = outbox_status(conn)
    if as_json:
        _echo_json(report)
        return
    states = report["deliveries"]
    click.echo(f"outbox ({report['database']}): {report['events']} events stored")
    click.echo(f"  pending    {states['pending']}  ({report['due']} due now, "
               f"{report['claimed']} claimed by a worker)")
    click.echo(f"  delivered  {states['delivered']}")
    click.echo(f"  dead       {states['dead']}")
    click.echo(f"  oldest pending: {_age(report['oldest_pending_age_seconds'])}")
    if report["signals"]:
        width = max(len(s) for s in report["signals"])
        click.echo(f"  {'signal'.ljust(width)}  {'pending':>8}  {'delivered':>10}  {'dead':>6}")
        for signal, counts in report["signals"].items():
            click.echo(f"  {signal.ljust(width)}  {counts['pending']:>8}  "
                       f"{counts['delivered']:>10}  {counts['dead']:>6}")
    if report["dead"]:
        click.echo("latest dead deliveries (flask signalbus retry --event ID to try again):")
        for item in report["dead"]:
            click.echo(f"  {item['event_id']}  {item['signal']} -> {item['receiver']}  "
                       f"after {item['attempts']} attempt(s): {item['last_error']}")


@cli.command("retry", with_appcontext=False)
@click.option("--all", "everything", is_flag=True, help="Every dead delivery.")
@click.option("--event", "event_ids", multiple=True, metavar="ID", help="By event id.")
@click.option("--signal", "signal_names", multiple=True, metavar="NAME", help="By signal.")
@click.option("--receiver", "receivers", multiple=True, metavar="NAME",
              help="Only deliveries to this receiver.")
@click.option("--failed", is_flag=True,
              help="Also pending deliveries waiting for their next attempt: make them due now.")
@_json_option
@_app_option
def retry_command(everything: bool, event_ids: tuple[str, ...], signal_names: tuple[str, ...],
                  receivers: tuple[str, ...], failed: bool, as_json: bool,
                  app_import: str | None) -> None:
    """Make dead deliveries pending again, with a fresh count of attempts."""
    from sqlalchemy import update

    from .outbox import DEAD, PENDING, deliveries, utcnow

    if not (everything or event_ids or signal_names or receivers):
        raise click.UsageError(
            "say which dead deliveries to retry: --all, --event ID, --signal NAME or "
            "--receiver NAME."
        )
    d = deliveries
    where: list[ColumnElement[bool]] = []
    if event_ids:
        where.append(d.c.event_id.in_(event_ids))
    if signal_names:
        where.append(d.c.signal.in_(signal_names))
    if receivers:
        where.append(d.c.receiver.in_(receivers))
    now = utcnow()
    with _opened(app_import) as runtime, _engine(runtime).begin() as conn:
        retried = conn.execute(
            update(d).where(d.c.state == DEAD, *where).values(
                state=PENDING, attempts=0, next_attempt_at=now, claimed_until=None,
                claimed_by=None, updated_at=now,
            )
        ).rowcount
        hurried = 0
        if failed:
            hurried = conn.execute(
                update(d).where(d.c.state == PENDING, d.c.next_attempt_at > now, *where)
                .values(next_attempt_at=now, updated_at=now)
            ).rowcount
        if retried or hurried:
            _notify(conn, runtime)
    if as_json:
        _echo_json({"retried": retried, "due_now": hurried})
    else:
        click.echo(f"{retried} dead deliveries are pending again"
                   + (f"; {hurried} waiting deliveries are due now" if failed else "") + ".")


@cli.command("replay", with_appcontext=False)
@click.option("--signal", "signal_names", multiple=True, metavar="NAME", help="By signal.")
@click.option("--since", metavar="WHEN", help="Events that occurred at or after WHEN "
              "(ISO 8601, or a duration ago: 2h, 7d).")
@click.option("--until", metavar="WHEN", help="Events that occurred before WHEN.")
@click.option("--event", "event_ids", multiple=True, metavar="ID", help="By event id.")
@click.option("--receiver", "receivers", multiple=True, metavar="NAME",
              help="Only to this receiver (default: every receiver the signal has now).")
@click.option("--all", "everything", is_flag=True, help="Every stored event (no filter).")
@_json_option
@_app_option
def replay_command(signal_names: tuple[str, ...], since: str | None, until: str | None,
                   event_ids: tuple[str, ...], receivers: tuple[str, ...], everything: bool,
                   as_json: bool, app_import: str | None) -> None:
    """Deliver stored events again, to the receivers their signals have now."""
    from sqlalchemy import func, select, tuple_, update

    from .outbox import PENDING, Outbox, deliveries, events, new_delivery, utcnow

    if not (everything or signal_names or since or until or event_ids):
        raise click.UsageError(
            "say which events to replay: --signal NAME, --since/--until WHEN, --event ID, "
            "or --all."
        )
    now = utcnow()
    e, d = events, deliveries
    where: list[ColumnElement[bool]] = []
    if signal_names:
        where.append(e.c.signal.in_(signal_names))
    if event_ids:
        where.append(e.c.id.in_(event_ids))
    if since:
        where.append(e.c.occurred_at >= parse_when(since, now))
    if until:
        where.append(e.c.occurred_at < parse_when(until, now))
    counts = {"events": 0, "inserted": 0, "reset": 0, "already_pending": 0}
    with _opened(app_import) as runtime:
        outbox = runtime.backend if isinstance(runtime.backend, Outbox) else Outbox(runtime)
        worker_senders = _SenderCache()
        engine = _engine(runtime)
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(e).where(*where)).scalar_one()
        last: tuple[Any, str] | None = None
        with click.progressbar(length=total, label="replaying events", file=sys.stderr,
                               show_pos=True) as bar:
            while True:
                page = select(e.c.id, e.c.signal, e.c.model, e.c.row_key, e.c.occurred_at) \
                    .where(*where).order_by(e.c.occurred_at, e.c.id).limit(500)
                if last is not None:
                    page = page.where(tuple_(e.c.occurred_at, e.c.id) > tuple_(*last))
                with engine.begin() as conn:
                    rows = conn.execute(page).all()
                    if not rows:
                        break
                    last = (rows[-1].occurred_at, rows[-1].id)
                    existing = {
                        (r.event_id, r.receiver): (r.id, r.state)
                        for r in conn.execute(select(d.c.id, d.c.event_id, d.c.receiver, d.c.state)
                                              .where(d.c.event_id.in_([r.id for r in rows])))
                    }
                    reset: list[int] = []
                    new: list[dict[str, Any]] = []
                    for row in rows:
                        sender = worker_senders.get(row.model)
                        for name in outbox.receiver_names(sender, row.signal):
                            if receivers and name not in receivers:
                                continue
                            found = existing.get((row.id, name))
                            if found is None:
                                new.append(new_delivery(row.id, name, row.signal, row.row_key,
                                                        now))
                            elif found[1] == PENDING:
                                counts["already_pending"] += 1
                            else:
                                reset.append(found[0])
                    if reset:
                        conn.execute(update(d).where(d.c.id.in_(reset)).values(
                            state=PENDING, attempts=0, next_attempt_at=now, claimed_until=None,
                            claimed_by=None, updated_at=now))
                    if new:
                        conn.execute(d.insert(), new)
                    if reset or new:
                        _notify(conn, runtime)
                counts["events"] += len(rows)
                counts["reset"] += len(reset)
                counts["inserted"] += len(new)
                bar.update(len(rows))
    if as_json:
        _echo_json(counts)
    else:
        click.echo(f"replayed {counts['events']} events: {counts['reset'] + counts['inserted']} "
                   f"deliveries queued ({counts['inserted']} to receivers new to the event), "
                   f"{counts['already_pending']} were still pending.")


class _SenderCache:
    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def get(self, model: str | None) -> Any:
        if model is None:
            return None
        if model not in self._cache:
            from .bindings import import_model
            from .errors import BindingError

            try:
                self._cache[model] = import_model(model)
            except BindingError:
                self._cache[model] = None
        return self._cache[model]


@cli.command("purge", with_appcontext=False)
@click.option("--older-than", "older_than", required=True, metavar="AGE",
              help="Delete delivered deliveries (and their events) older than AGE: 7d, 12h, 3600.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@_json_option
@_app_option
def purge_command(older_than: str, dry_run: bool, as_json: bool, app_import: str | None) -> None:
    """Delete delivered deliveries older than an age, and the events left without any."""
    from sqlalchemy import delete, exists, func, select

    from .outbox import DELIVERED, deliveries, events, utcnow

    cutoff = utcnow() - parse_duration(older_than)
    d, e = deliveries, events
    old_delivered = (d.c.state == DELIVERED, d.c.updated_at < cutoff)
    with _opened(app_import) as runtime, _engine(runtime).begin() as conn:
        if dry_run:
            n_deliveries = conn.execute(
                select(func.count()).select_from(d).where(*old_delivered)).scalar_one()
            left = exists().where(d.c.event_id == e.c.id,
                                  ~((d.c.state == DELIVERED) & (d.c.updated_at < cutoff)))
            n_events = conn.execute(
                select(func.count()).select_from(e).where(e.c.created_at < cutoff, ~left)
            ).scalar_one()
        else:
            n_deliveries = conn.execute(delete(d).where(*old_delivered)).rowcount
            n_events = conn.execute(
                delete(e).where(e.c.created_at < cutoff,
                                ~exists().where(d.c.event_id == e.c.id))
            ).rowcount
    result = {"deliveries": n_deliveries, "events": n_events, "before": cutoff.isoformat(),
              "dry_run": dry_run}
    if as_json:
        _echo_json(result)
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {n_deliveries} delivered deliveries and {n_events} events older "
                   f"than {cutoff.isoformat(timespec='seconds')}.")
