"""The body of the delivery task: run one (event, receiver) delivery handed over by the
relay, and record its outcome in the outbox.

:func:`deliver` is called by the Celery task ``signalbus.deliver(delivery_id, token,
attempt)`` (:mod:`signalbus.celery.app`), inside the Flask app context. It

* takes the delivery only while it is still this hand-over's and at this attempt
  (:func:`signalbus.outbox.sql.take_handed_over`): a redelivered task whose delivery is
  already settled, or was handed over again, does nothing — the delivery row is the
  idempotency record; on PostgreSQL an advisory lock held for the run keeps two copies
  of one task from running the receiver at the same time;
* runs the receiver by its durable name through
  :func:`signalbus.delivery.run_receiver` (``retries=True``), with the same
  :class:`~signalbus.Event` every delivery mode hands over;
* records ``delivered``; or, after a failure, ``dead`` (``Permanent``, or
  ``SIGNALBUS_OUTBOX_MAX_ATTEMPTS`` attempts) or the next attempt, which Celery runs
  after a countdown: ``Retry(after=)`` (clamped as in outbox mode) or the outbox's
  backoff with jitter. The hand-over keeps its claim until then, so the relay does not
  hand the delivery over again unless that retry never comes.

Nothing here imports Celery; the task object is passed in for its ``retry``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Connection, Engine

from .. import delivery
from ..errors import BindingError
from ..events import Event
from ..outbox import retry, schema, sql
from ..outbox.settings import OutboxSettings, engine_of, utcnow
from ..redaction import describe_error
from .relay import backend_of
from .settings import CelerySettings

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..signals import Receiver

__all__ = ["DELIVERED", "DEAD", "RETRYING", "SKIPPED", "BUSY", "deliver"]

log = logging.getLogger("signalbus")

DELIVERED = "delivered"
DEAD = "dead"
RETRYING = "retrying"
SKIPPED = "skipped"
"""The delivery is no longer this task's: settled, handed over again, or past this attempt."""
BUSY = "busy"
"""Another copy of this task is running the delivery right now."""


@dataclasses.dataclass
class _State:
    engine: Engine
    settings: OutboxSettings
    celery_settings: CelerySettings
    senders: dict[str, Any]


_states: dict[int, tuple[Runtime, _State]] = {}


def _state(runtime: Runtime) -> _State:
    found = _states.get(id(runtime))
    if found is None or found[0] is not runtime:
        backend = backend_of(runtime)
        state = _State(engine_of(runtime), backend.settings, backend.celery_settings, {})
        _states[id(runtime)] = found = (runtime, state)
    return found[1]


class _Unreadable(Exception):
    pass


def deliver(task: Any, runtime: Runtime, delivery_id: int, token: str, attempt: int) -> str:
    """Run one handed-over delivery (see the module docstring); what came of it:
    :data:`DELIVERED`, :data:`DEAD`, :data:`SKIPPED` or :data:`BUSY`, or Celery's
    ``Retry`` raised by ``task.retry`` for the next attempt."""
    state = _state(runtime)
    with state.engine.connect() as raw:
        # PostgreSQL: each statement commits at once (and the advisory lock is the
        # session's); SQLite: each in a transaction of its own, never one left open
        # while the receiver runs (its writes would find the database locked)
        conn = _Statements(raw)
        locked = conn.run(lambda c: sql.try_lock_delivery(c, delivery_id))
        try:
            if not locked:
                log.info("signalbus: delivery %d is being run by another copy of its task; "
                         "this copy does nothing", delivery_id)
                return BUSY
            return _run(task, runtime, state, conn, delivery_id, token, attempt)
        finally:
            with contextlib.suppress(Exception):
                conn.run(lambda c: sql.unlock_delivery(c, delivery_id, locked=locked))


T = TypeVar("T")


class _Statements:
    def __init__(self, conn: Connection) -> None:
        self.postgres = conn.dialect.name == "postgresql"
        self.conn = conn.execution_options(isolation_level="AUTOCOMMIT") if self.postgres \
            else conn

    def run(self, fn: Callable[[Connection], T]) -> T:
        if self.postgres:
            return fn(self.conn)
        with self.conn.begin():
            return fn(self.conn)


def _run(task: Any, runtime: Runtime, state: _State, conn: _Statements, delivery_id: int,
         token: str, attempt: int) -> str:
    now = utcnow()
    lease = dt.timedelta(seconds=state.celery_settings.lease)
    row = conn.run(lambda c: sql.take_handed_over(c, delivery_id, token=token,
                                                  attempt=attempt, until=now + lease))
    if row is None:
        log.info("signalbus: delivery %d attempt %d is settled or no longer this task's; "
                 "nothing to do", delivery_id, attempt)
        return SKIPPED
    outcome: delivery.Outcome
    try:
        event, sender = _read(state, row.payload, attempt, row.outbox_id)
    except _Unreadable as exc:
        outcome = delivery.Outcome("permanent", exc)
    else:
        rec = _find(runtime, row.signal, row.receiver, sender)
        if rec is None:
            outcome = delivery.Outcome("error", LookupError(
                f"receiver {row.receiver!r} of signal {row.signal!r} is not connected in this "
                "Celery worker: is its plugin installed and enabled here, or was it renamed? "
                "(Its delivery is retried, then dead; `signalbus retry` after fixing.)"))
        else:
            delivery.notify(sender, event)
            outcome = delivery.run_receiver(rec, sender, event, retries=True)
    now = utcnow()
    if outcome.ok:
        ours = conn.run(lambda c: sql.record_handed_over(
            c, delivery_id, token=token, state=schema.DELIVERED, attempts=attempt, now=now))
        _lost(ours, delivery_id)
        _wake_relay(conn, state, row.row_key)
        return DELIVERED
    assert outcome.error is not None
    error = describe_error(outcome.error)
    if retry.gives_up(state.settings, attempt, permanent=outcome.kind == "permanent"):
        ours = conn.run(lambda c: sql.record_handed_over(
            c, delivery_id, token=token, state=schema.DEAD, attempts=attempt, now=now,
            error=error))
        _lost(ours, delivery_id)
        log.error("signalbus: delivery of %s event %s to %s is dead after %d attempt(s): %s",
                  row.signal, row.event_id, row.receiver, attempt, error)
        _wake_relay(conn, state, row.row_key)
        return DEAD
    wait = retry.delay(state.settings, attempt,
                       outcome.after if outcome.kind == "retry" else None)
    next_at = now + dt.timedelta(seconds=wait)
    ours = conn.run(lambda c: sql.record_handed_over(
        c, delivery_id, token=token, state=schema.PENDING, attempts=attempt, now=now,
        next_attempt_at=next_at, until=next_at + lease, error=error))
    if not _lost(ours, delivery_id):
        return SKIPPED
    log.info("signalbus: %s event %s to %s: attempt %d in %.2fs", row.signal, row.event_id,
             row.receiver, attempt + 1, wait)
    raise task.retry(args=(delivery_id, token, attempt + 1), kwargs={}, countdown=wait,
                     max_retries=None)


def _lost(ours: bool, delivery_id: int) -> bool:
    if not ours:
        log.warning("signalbus: delivery %d was handed over again before its task reported "
                    "(its lease lapsed): it may have run twice; raise SIGNALBUS_CELERY_LEASE "
                    "above the longest queue wait plus the slowest receiver", delivery_id)
    return ours


def _wake_relay(conn: _Statements, state: _State, row_key: str | None) -> None:
    """A settled delivery makes room under ``SIGNALBUS_CELERY_MAX_HANDED_OVER`` and lets the
    next delivery of its row go: wake the relay (PostgreSQL)."""
    if conn.postgres:
        sql.notify(conn.conn, state.settings)


def _read(state: _State, payload: Any, attempt: int, outbox_id: int) -> tuple[Event, Any]:
    if not isinstance(payload, dict):
        raise _Unreadable(f"outbox row {outbox_id} is missing or its payload is not an object")
    try:
        event = Event.from_dict({**payload, "attempt": attempt})
    except Exception as exc:
        raise _Unreadable(f"outbox row {outbox_id} is not an event "
                          f"({describe_error(exc, 300)})") from None
    model = payload.get("model")
    sender = None
    if isinstance(model, str):
        if model not in state.senders:
            from ..bindings import import_model

            try:
                state.senders[model] = import_model(model)
            except BindingError as exc:
                log.warning("signalbus: %s; delivering with sender None", exc)
                state.senders[model] = None
        sender = state.senders[model]
    return event, sender


def _find(runtime: Runtime, signal: str, name: str, sender: Any) -> Receiver | None:
    for rec in runtime.receivers_for(signal, sender):
        if rec.name == name:
            return rec
    found: Receiver | None = runtime.find_receiver(signal, name)
    return found
