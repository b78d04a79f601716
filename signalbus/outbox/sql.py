"""Every SQL statement of the outbox, one documented function each.

The functions take a :class:`~sqlalchemy.engine.Connection` and run on it; they never
begin or commit (the caller decides: the worker's bookkeeping runs each statement in
autocommit on PostgreSQL, a settle with new delivery rows in one transaction).
Statements run for every batch are built once per dialect (:func:`_statements`).

Claims (:func:`claim_events`, :func:`claim_deliveries`) are one ``UPDATE … WHERE id IN
(SELECT … ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED) RETURNING …`` each: the
lease is written in the statement that takes the rows, so any number of workers share
the work without taking the same row. A row is only claimable when it heads its chain:
no earlier pending event of the same row (events), no earlier pending delivery of the
same row to the same receiver (deliveries). The walk follows the partial index of
pending rows in id order, so its cost is a batch's worth of rows, not the backlog.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql.elements import ColumnElement

from .schema import DEAD, DELIVERED, DONE, PENDING, changes, deliveries, outbox
from .settings import OutboxSettings

__all__ = [
    "ack_deliveries",
    "changed_rows",
    "changes_summary",
    "delete_changed_rows",
    "delete_changes",
    "fail_changes",
    "retry_changes",
    "take_changes",
    "try_lock_changes",
    "ack_events",
    "blocked",
    "claim_deliveries",
    "claim_events",
    "count_events",
    "counts",
    "done_per_signal",
    "done_per_signal_estimate",
    "event_counts",
    "dead_events",
    "deliveries_of",
    "deliveries_per_receiver",
    "event_deliveries",
    "event_filter",
    "fail_delivery",
    "find_event",
    "handed_over",
    "insert_deliveries",
    "insert_events",
    "kill_event",
    "latest_dead",
    "next_due",
    "notify",
    "overview",
    "payloads",
    "pending_summary",
    "problem_deliveries",
    "purge",
    "record_handed_over",
    "release",
    "release_all",
    "renew",
    "requeue",
    "requeue_deliveries",
    "reset_deliveries",
    "settle_event",
    "settled_events_after",
    "settled_per_minute",
    "take_handed_over",
    "try_lock_delivery",
    "unlock_delivery",
]

SESSION = {
    # Claims and results need not wait for the WAL flush: if the server loses the last
    # ones in a crash, those deliveries are made again, which at-least-once allows.
    # Receivers' own transactions are not affected.
    "synchronous_commit": "off",
    # The claim's plan, whatever the statistics: the walk of the pending index in id
    # order (a sort or a bitmap scan would fetch every pending row for each batch).
    "enable_sort": "off",
    "enable_bitmapscan": "off",
    # The driver prepares statements run often; a generic plan made while the table
    # was small (a seq scan) would be kept however large it grows.
    "plan_cache_mode": "force_custom_plan",
}
"""Settings of a worker's own connections on PostgreSQL (reset when it closes them)."""


_SEP = "\x1f"


def _ids_in(dialect: str, column: Any, name: str) -> ColumnElement[bool]:
    """``column`` in the list given as parameter ``name``: ``= ANY(:name)`` on PostgreSQL
    (one array parameter, one statement text whatever the number), ``IN`` elsewhere."""
    if dialect == "postgresql":
        kind = BigInteger if isinstance(column.type, BigInteger) else Text
        return column == any_(bindparam(name, type_=ARRAY(kind)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    o, d = outbox, deliveries
    now = bindparam("now", type_=o.c.claimed_until.type)

    c = outbox.alias("c")
    earlier = outbox.alias("earlier")
    head = ~exists().where(earlier.c.state == PENDING, earlier.c.row_key == c.c.row_key,
                           earlier.c.id < c.c.id)
    pick = (
        select(c.c.id)
        .where(c.c.state == PENDING,
               or_(c.c.claimed_until.is_(None), c.c.claimed_until <= now),
               or_(c.c.row_key.is_(None), head))
        .order_by(c.c.id).limit(bindparam("batch")).with_for_update(skip_locked=True)
    )
    returned: list[Any] = [o.c.id, o.c.row_key, o.c.payload]
    if dialect == "postgresql":
        # the receivers with a pending delivery of the event's row, in the same round
        # trip (SQLite renders a correlated subquery in RETURNING unqualified: see
        # blocked(), run as a query of its own there)
        bd = deliveries.alias("bd")
        returned.append(
            select(func.string_agg(bd.c.receiver, literal(_SEP, Text)))
            .where(bd.c.state == PENDING, bd.c.row_key == o.c.row_key)
            .scalar_subquery().label("blocked"))
    claim_events = (
        update(o).where(o.c.id.in_(pick.scalar_subquery()))
        .values(claimed_until=bindparam("until"), claimed_by=bindparam("by"))
        .returning(*returned)
    )

    dc = deliveries.alias("dc")
    dearlier = deliveries.alias("dearlier")
    dhead = ~exists().where(dearlier.c.state == PENDING, dearlier.c.row_key == dc.c.row_key,
                            dearlier.c.receiver == dc.c.receiver, dearlier.c.id < dc.c.id)
    dpick = (
        select(dc.c.id)
        .where(dc.c.state == PENDING, dc.c.next_attempt_at <= now,
               or_(dc.c.claimed_until.is_(None), dc.c.claimed_until <= now),
               or_(dc.c.row_key.is_(None), dhead))
        .order_by(dc.c.id).limit(bindparam("batch")).with_for_update(skip_locked=True)
    )
    claim_deliveries = (
        update(d).where(d.c.id.in_(dpick.scalar_subquery()))
        .values(claimed_until=bindparam("until"), claimed_by=bindparam("by"))
        .returning(d.c.id, d.c.outbox_id, d.c.event_id, d.c.receiver, d.c.signal,
                   d.c.row_key, d.c.attempts)
    )
    return {
        "claim_events": claim_events,
        "claim_deliveries": claim_deliveries,
        "any_deliveries": select(literal(1)).select_from(d).where(d.c.state == PENDING).limit(1),
        "blocked": select(d.c.row_key, d.c.receiver).distinct().where(
            d.c.state == PENDING, _ids_in(dialect, d.c.row_key, "keys")),
        "payloads": select(o.c.id, o.c.payload).where(_ids_in(dialect, o.c.id, "ids")),
        "ack_events": update(o).where(_ids_in(dialect, o.c.id, "ids")).values(
            state=DONE, settled_at=bindparam("now"), claimed_until=None, claimed_by=None),
        "ack_deliveries": update(d).where(_ids_in(dialect, d.c.id, "ids")).values(
            state=DELIVERED, attempts=bindparam("attempt"), claimed_until=None,
            claimed_by=None, updated_at=bindparam("now")),
    }


def _run(conn: Connection, name: str, params: dict[str, Any]) -> Any:
    return conn.execute(_statements(conn.dialect.name)[name], params)


def is_missing_table(exc: sa_exc.DBAPIError) -> bool:
    """Whether a database error says an outbox table does not exist."""
    text = str(exc.orig).lower()
    return "signalbus_" in text and ("does not exist" in text or "no such table" in text)


# the write at commit --------------------------------------------------------------------


INSERT_CHUNK = 1000
"""Rows per ``executemany`` of :func:`insert_events` where there is no ``COPY``: one
statement for a transaction of up to a thousand events; a larger one in steps (measured
on SQLite, a 100,000-event transaction: see docs/outbox-design.md)."""


def insert_events(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Insert event rows (``row_key``, ``event_id``, ``payload``); state, id and
    creation time come from the server.

    With psycopg 3 (synchronous) on PostgreSQL, one ``COPY … FROM STDIN`` on the
    transaction's own connection: half the cost of an ``executemany`` of the same rows
    (``benchmarks/outbox_shapes.py``), and rows are streamed, not collected first.
    Elsewhere, one ``executemany`` per :data:`INSERT_CHUNK` rows, so that a large
    transaction's rows (and the parameters the driver makes of them) are never all held
    at once. A row without ``event_id`` gets its payload's ``id``.
    """
    rows = (row if "event_id" in row else {**row, "event_id": _payload_id(row["payload"])}
            for row in rows)
    dialect = conn.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg" and not dialect.is_async:
        dumps = getattr(dialect, "_json_serializer", None) or json.dumps
        table = dialect.identifier_preparer.format_table(outbox)
        statement = f"COPY {table} (row_key, event_id, payload) FROM STDIN"
        raw: Any = conn.connection.driver_connection
        try:
            with raw.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row((row["row_key"], row["event_id"], dumps(row["payload"])))
        except dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy would have raised it
            raise sa_exc.DBAPIError.instance(statement, None, exc,
                                             dialect.loaded_dbapi.Error) from exc
        return
    insert = outbox.insert()
    while chunk := list(itertools.islice(rows, INSERT_CHUNK)):
        conn.execute(insert, chunk)


def _payload_id(payload: Any) -> str | None:
    found = payload.get("id") if isinstance(payload, dict) else None
    return found if isinstance(found, str) else None


def notify(conn: Connection, settings: OutboxSettings) -> None:
    """Queue a ``NOTIFY`` on PostgreSQL; the server sends it when the transaction commits
    (and never if it rolls back). A no-op on other databases or with notify off."""
    if settings.notify and conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(settings.channel, "")))


# claims -----------------------------------------------------------------------------------


def claim_events(conn: Connection, *, now: dt.datetime, until: dt.datetime, by: str,
                 batch: int) -> tuple[list[Row[Any]], set[tuple[str, str]]]:
    """Claim up to ``batch`` pending events heading their row's chain, lease them to
    ``by`` until ``until``. Returns their rows ``(id, row_key, payload, …)`` in commit
    order, and :func:`blocked` for their rows (on PostgreSQL from the same statement)."""
    rows = sorted(_run(conn, "claim_events",
                       {"now": now, "until": until, "by": by, "batch": batch}).all(),
                  key=lambda r: r.id)
    if conn.dialect.name != "postgresql":
        return rows, blocked(conn, {r.row_key for r in rows if r.row_key is not None})
    held = {(r.row_key, name) for r in rows if r.blocked for name in r.blocked.split(_SEP)}
    return rows, held


def claim_deliveries(conn: Connection, *, now: dt.datetime, until: dt.datetime, by: str,
                     batch: int) -> list[Row[Any]]:
    """Claim up to ``batch`` due deliveries heading their (row, receiver) chain; rows
    ``(id, outbox_id, event_id, receiver, signal, row_key, attempts)`` in id order."""
    rows = _run(conn, "claim_deliveries",
                {"now": now, "until": until, "by": by, "batch": batch}).all()
    return sorted(rows, key=lambda r: r.id)


def any_pending_deliveries(conn: Connection) -> bool:
    """Whether any delivery is pending (a cheap probe of the pending index)."""
    return _run(conn, "any_deliveries", {}).first() is not None


def blocked(conn: Connection, keys: Iterable[str]) -> set[tuple[str, str]]:
    """The ``(row_key, receiver)`` pairs of ``keys`` with a pending delivery: an event of
    such a row must queue behind it for that receiver instead of running."""
    keys = list(keys)
    if not keys:
        return set()
    return {(r.row_key, r.receiver) for r in _run(conn, "blocked", {"keys": keys})}


def payloads(conn: Connection, outbox_ids: Iterable[int]) -> dict[int, Any]:
    """The stored payloads of these event rows, by id."""
    ids = sorted(set(outbox_ids))
    if not ids:
        return {}
    return {r.id: r.payload for r in _run(conn, "payloads", {"ids": ids})}


# results ----------------------------------------------------------------------------------


def ack_events(conn: Connection, ids: Sequence[int], now: dt.datetime) -> None:
    """Settle events whose every receiver succeeded: ``done``, lease cleared."""
    if ids:
        _run(conn, "ack_events", {"ids": list(ids), "now": now})


def ack_deliveries(conn: Connection, ids: Sequence[int], attempt: int,
                   now: dt.datetime) -> None:
    """Record successful deliveries made at attempt number ``attempt``."""
    if ids:
        _run(conn, "ack_deliveries", {"ids": list(ids), "attempt": attempt, "now": now})


def new_delivery(outbox_id: int, event_id: str, receiver: str, signal: str,
                 row_key: str | None, now: dt.datetime, *, state: str = PENDING,
                 attempts: int = 0, next_attempt_at: dt.datetime | None = None,
                 last_error: str | None = None) -> dict[str, Any]:
    """A :data:`~signalbus.outbox.schema.deliveries` row (default: pending, due now)."""
    return {
        "outbox_id": outbox_id, "event_id": event_id, "receiver": receiver,
        "signal": signal, "row_key": row_key, "state": state, "attempts": attempts,
        "next_attempt_at": next_attempt_at or now, "claimed_until": None,
        "claimed_by": None, "last_error": last_error, "created_at": now, "updated_at": now,
    }


def insert_deliveries(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert delivery rows (:func:`new_delivery`) in one ``executemany``."""
    if rows:
        conn.execute(deliveries.insert(), list(rows))


def settle_event(conn: Connection, outbox_id: int, rows: Sequence[dict[str, Any]], *,
                 by: str, now: dt.datetime) -> bool:
    """Settle an event claimed by ``by`` some receivers of which need tracking on their
    own: mark it ``done`` and insert their delivery rows. Run it in one transaction: the
    receivers that succeeded are then never run again, whatever happens to the others.
    Whether it was still ``by``'s claim (if its lease lapsed and another worker took
    it, nothing is written: that worker's outcome is the one recorded)."""
    owned = conn.execute(
        update(outbox).where(outbox.c.id == outbox_id, outbox.c.claimed_by == by,
                             outbox.c.state == PENDING)
        .values(state=DONE, settled_at=now, claimed_until=None, claimed_by=None)
        .returning(outbox.c.id)).first()
    if owned is None:
        return False
    insert_deliveries(conn, rows)
    return True


def kill_event(conn: Connection, outbox_id: int, error: str, now: dt.datetime) -> None:
    """Mark an event row that cannot be delivered (unreadable payload) ``dead``."""
    conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(
        state=DEAD, last_error=error, settled_at=now, claimed_until=None, claimed_by=None))


def fail_delivery(conn: Connection, delivery_id: int, *, by: str, dead: bool, attempts: int,
                  next_attempt_at: dt.datetime, error: str, now: dt.datetime) -> None:
    """Record a failed attempt of a delivery claimed by ``by``: pending again from
    ``next_attempt_at``, or ``dead``; lease cleared."""
    d = deliveries
    conn.execute(update(d).where(d.c.id == delivery_id, d.c.claimed_by == by).values(
        state=DEAD if dead else PENDING, attempts=attempts, next_attempt_at=next_attempt_at,
        last_error=error, claimed_until=None, claimed_by=None, updated_at=now))


# leases -----------------------------------------------------------------------------------


def renew(conn: Connection, *, events: Sequence[int], delivery_ids: Sequence[int], by: str,
          until: dt.datetime) -> tuple[set[int], set[int]]:
    """Extend the lease of these claims of ``by``; the ids still ``by``'s (events,
    deliveries). A missing id lapsed and was taken by another worker."""
    kept_events: set[int] = set()
    kept_deliveries: set[int] = set()
    if events:
        kept_events = {r.id for r in conn.execute(
            update(outbox).where(outbox.c.id.in_(list(events)), outbox.c.claimed_by == by,
                                 outbox.c.state == PENDING)
            .values(claimed_until=until).returning(outbox.c.id))}
    if delivery_ids:
        d = deliveries
        kept_deliveries = {r.id for r in conn.execute(
            update(d).where(d.c.id.in_(list(delivery_ids)), d.c.claimed_by == by,
                            d.c.state == PENDING)
            .values(claimed_until=until).returning(d.c.id))}
    return kept_events, kept_deliveries


def release(conn: Connection, *, events: Sequence[int], delivery_ids: Sequence[int],
            by: str) -> None:
    """Hand back claims of ``by`` not worked on (the worker stops)."""
    if events:
        conn.execute(update(outbox).where(outbox.c.id.in_(list(events)),
                                          outbox.c.claimed_by == by)
                     .values(claimed_until=None, claimed_by=None))
    if delivery_ids:
        d = deliveries
        conn.execute(update(d).where(d.c.id.in_(list(delivery_ids)), d.c.claimed_by == by)
                     .values(claimed_until=None, claimed_by=None))


def release_all(conn: Connection, by: str) -> int:
    """Hand back every pending claim of ``by`` (a worker that lost its connection, once
    it is back); the number released."""
    n = conn.execute(update(outbox).where(outbox.c.claimed_by == by, outbox.c.state == PENDING)
                     .values(claimed_until=None, claimed_by=None)).rowcount
    d = deliveries
    n += conn.execute(update(d).where(d.c.claimed_by == by, d.c.state == PENDING)
                      .values(claimed_until=None, claimed_by=None)).rowcount
    return int(n)


def next_due(conn: Connection, now: dt.datetime) -> dt.datetime | None:
    """The earliest future time work falls due: a retry's next attempt, or the end of a
    lease of another worker; ``None`` if nothing is scheduled. One round trip."""
    o, d = outbox, deliveries
    row = conn.execute(select(
        select(func.min(o.c.claimed_until))
        .where(o.c.state == PENDING, o.c.claimed_until > now).scalar_subquery(),
        select(func.min(d.c.next_attempt_at))
        .where(d.c.state == PENDING, d.c.next_attempt_at > now).scalar_subquery(),
        select(func.min(d.c.claimed_until))
        .where(d.c.state == PENDING, d.c.claimed_until > now).scalar_subquery(),
    )).one()
    found = [t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in row if t is not None]
    return min(found) if found else None


# the operator's statements ------------------------------------------------------------------


def _signal_of() -> ColumnElement[Any]:
    signal: ColumnElement[Any] = outbox.c.payload["signal"].as_string()
    return signal


ESTIMATE_ABOVE = 100_000
"""On PostgreSQL, an outbox whose statistics say it holds more rows than this has its
``done`` events estimated (:func:`event_counts`) unless counted ``exact``ly."""

SAMPLE_ROWS = 20_000
"""About how many rows :func:`done_per_signal_estimate` reads."""


def _table_rows(conn: Connection) -> float | None:
    """The planner's row count of the outbox table (``pg_class.reltuples``, kept by
    autovacuum and ``ANALYZE``); ``None`` if it was never counted, or not PostgreSQL."""
    if conn.dialect.name != "postgresql":
        return None
    name = conn.dialect.identifier_preparer.format_table(outbox)
    found = conn.execute(select(literal_column("reltuples")).select_from(
        table("pg_class")).where(literal_column("oid") == func.to_regclass(name))).scalar()
    return float(found) if found is not None and found >= 0 else None


def event_counts(conn: Connection, *, exact: bool = False) -> tuple[dict[str, int], bool]:
    """Events per state (``pending``, ``done``, ``dead``), and whether ``done`` is an
    estimate. ``pending`` and ``dead`` are counted from their partial indexes (cheap
    whatever the table's size). ``done`` is counted too, unless the table is large
    (PostgreSQL, over :data:`ESTIMATE_ABOVE` rows by its statistics) and not ``exact``:
    then it is the table's estimated row count less the pending and dead ones (a count
    would read every row: about 0.1 s per million)."""
    o = outbox
    pending = int(conn.execute(select(func.count()).select_from(o)
                               .where(o.c.state == PENDING)).scalar_one())
    dead = int(conn.execute(select(func.count()).select_from(o)
                            .where(o.c.state == DEAD)).scalar_one())
    rows = None if exact else _table_rows(conn)
    if rows is not None and rows > ESTIMATE_ABOVE:
        return {PENDING: pending, DONE: max(0, round(rows) - pending - dead), DEAD: dead}, True
    done = int(conn.execute(select(func.count()).select_from(o)
                            .where(o.c.state == DONE)).scalar_one())
    return {PENDING: pending, DONE: done, DEAD: dead}, False


def done_per_signal(conn: Connection) -> dict[str, int]:
    """``done`` events per signal, counted: reads every settled payload (seconds per
    million rows)."""
    o = outbox
    signal = _signal_of().label("signal")
    return {str(name): int(n) for name, n in conn.execute(
        select(signal, func.count()).where(o.c.state == DONE).group_by(signal))}


def done_per_signal_estimate(conn: Connection, done: int) -> dict[str, int]:
    """``done`` events per signal, estimated (PostgreSQL): the signals of a sample of
    about :data:`SAMPLE_ROWS` rows (``TABLESAMPLE SYSTEM``: whole pages, picked at
    random) scaled to ``done`` in all. A signal with few events may be missed or
    over-counted; what the estimate is good for is the share of each busy signal."""
    rows = _table_rows(conn) or 0.0
    percent = min(100.0, 100.0 * SAMPLE_ROWS / rows) if rows else 100.0
    name = conn.dialect.identifier_preparer.format_table(outbox)
    found = conn.execute(text(
        f"SELECT payload->>'signal' AS signal, count(*) FROM {name} "  # noqa: S608 - quoted name
        "TABLESAMPLE SYSTEM (:percent) WHERE state = 'done' GROUP BY 1"),
        {"percent": percent}).all()
    sampled = sum(int(n) for _, n in found)
    if not sampled:
        return {}
    return {str(signal): round(int(n) * done / sampled) for signal, n in found}


def counts(conn: Connection, now: dt.datetime, *, exact: bool = False) -> dict[str, Any]:
    """What ``status`` counts: events per state (:func:`event_counts`) and per signal
    (pending and dead counted from their partial indexes; ``done`` counted with
    ``exact`` or on a small table, else :func:`done_per_signal_estimate`), delivery rows
    per state and signal, how many are due and claimed, the creation time of the oldest
    pending one, and ``estimated``: whether the ``done`` figures are estimates."""
    o, d = outbox, deliveries
    states, estimated = event_counts(conn, exact=exact)
    signal = _signal_of().label("signal")
    events = [(name, state, int(n)) for state in (PENDING, DEAD)  # their partial indexes
              for name, n in conn.execute(select(signal, func.count())
                                          .where(o.c.state == state).group_by(signal))]
    done = (done_per_signal_estimate(conn, states[DONE]) if estimated
            else done_per_signal(conn))
    events += [(name, DONE, n) for name, n in done.items()]
    rows = [tuple(r) for r in conn.execute(
        select(d.c.signal, d.c.state, func.count()).group_by(d.c.signal, d.c.state))]
    free_o = or_(o.c.claimed_until.is_(None), o.c.claimed_until <= now)
    oldest_o, due_o, claimed_o = conn.execute(select(
        func.min(o.c.created_at), func.count().filter(free_o),
        func.count().filter(o.c.claimed_until > now),
    ).where(o.c.state == PENDING)).one()
    free_d = or_(d.c.claimed_until.is_(None), d.c.claimed_until <= now)
    oldest_d, due_d, claimed_d = conn.execute(select(
        func.min(d.c.created_at), func.count().filter(and_(d.c.next_attempt_at <= now, free_d)),
        func.count().filter(d.c.claimed_until > now),
    ).where(d.c.state == PENDING)).one()
    return {"states": states, "estimated": estimated, "events": events, "deliveries": rows,
            "due": int(due_o) + int(due_d), "claimed": int(claimed_o) + int(claimed_d),
            "oldest": [t for t in (oldest_o, oldest_d) if t is not None]}


def latest_dead(conn: Connection, limit: int) -> tuple[list[Any], list[Any]]:
    """The latest ``dead`` delivery rows and ``dead`` event rows, newest first."""
    o, d = outbox, deliveries
    rows = conn.execute(
        select(d.c.event_id, d.c.signal, d.c.receiver, d.c.attempts, d.c.last_error,
               d.c.updated_at)
        .where(d.c.state == DEAD).order_by(d.c.updated_at.desc()).limit(limit)).all()
    events = conn.execute(
        select(o.c.id, o.c.payload, o.c.last_error, o.c.settled_at)
        .where(o.c.state == DEAD).order_by(o.c.settled_at.desc(), o.c.id.desc())
        .limit(limit)).all()
    return list(rows), list(events)


def event_filter(*, signals: Sequence[str] = (), event_ids: Sequence[str] = (),
                 since: dt.datetime | None = None, until: dt.datetime | None = None
                 ) -> list[ColumnElement[bool]]:
    """The conditions on event rows of ``replay``: by signal, event id, and the time the
    event was stored (``since`` included, ``until`` excluded)."""
    o = outbox
    where: list[ColumnElement[bool]] = []
    if signals:
        where.append(_signal_of().in_(list(signals)))
    if event_ids:
        where.append(o.c.event_id.in_(list(event_ids)))
    if since is not None:
        where.append(o.c.created_at >= since)
    if until is not None:
        where.append(o.c.created_at < until)
    return where


def count_events(conn: Connection, where: Sequence[ColumnElement[bool]], *,
                 pending: bool) -> int:
    """How many event rows match ``where``, among the pending ones or the settled ones."""
    state = outbox.c.state == PENDING if pending else outbox.c.state != PENDING
    return int(conn.execute(select(func.count()).select_from(outbox)
                            .where(state, *where)).scalar_one())


def settled_events_after(conn: Connection, where: Sequence[ColumnElement[bool]],
                         after: int, limit: int) -> list[Any]:
    """The next ``limit`` settled event rows matching ``where`` with an id above
    ``after``, in commit order: ``(id, row_key, payload)``."""
    o = outbox
    return list(conn.execute(select(o.c.id, o.c.row_key, o.c.payload)
                             .where(o.c.id > after, o.c.state != PENDING, *where)
                             .order_by(o.c.id).limit(limit)).all())


def deliveries_of(conn: Connection, outbox_ids: Sequence[int]
                  ) -> dict[tuple[int, str], tuple[int, str]]:
    """The delivery rows of these events: ``(event row id, receiver) -> (id, state)``."""
    d = deliveries
    return {(r.outbox_id, r.receiver): (r.id, r.state) for r in conn.execute(
        select(d.c.id, d.c.outbox_id, d.c.receiver, d.c.state)
        .where(d.c.outbox_id.in_(list(outbox_ids))))}


def reset_deliveries(conn: Connection, ids: Sequence[int], now: dt.datetime) -> None:
    """Make these delivery rows pending and due now, with a fresh count of attempts."""
    if ids:
        d = deliveries
        conn.execute(update(d).where(d.c.id.in_(list(ids))).values(
            state=PENDING, attempts=0, next_attempt_at=now, claimed_until=None,
            claimed_by=None, updated_at=now))


def requeue(conn: Connection, *, now: dt.datetime, event_ids: Sequence[str] = (),
            signals: Sequence[str] = (), receivers: Sequence[str] = (),
            waiting: bool = False) -> dict[str, int]:
    """Make dead deliveries (and dead events, unless ``receivers`` narrows to
    deliveries) pending and due now with a fresh count of attempts; with ``waiting``,
    also make deliveries waiting for a retry due now. The counts."""
    d, o = deliveries, outbox
    where: list[ColumnElement[bool]] = []
    if event_ids:
        where.append(d.c.event_id.in_(list(event_ids)))
    if signals:
        where.append(d.c.signal.in_(list(signals)))
    if receivers:
        where.append(d.c.receiver.in_(list(receivers)))
    counts = {"deliveries": conn.execute(
        update(d).where(d.c.state == DEAD, *where).values(
            state=PENDING, attempts=0, next_attempt_at=now, claimed_until=None,
            claimed_by=None, updated_at=now)).rowcount, "events": 0, "due_now": 0}
    if not receivers:
        ewhere: list[ColumnElement[bool]] = []
        if event_ids:
            ewhere.append(o.c.event_id.in_(list(event_ids)))
        if signals:
            ewhere.append(o.c.payload["signal"].as_string().in_(list(signals)))
        counts["events"] = conn.execute(update(o).where(o.c.state == DEAD, *ewhere).values(
            state=PENDING, last_error=None, settled_at=None, claimed_until=None,
            claimed_by=None)).rowcount
    if waiting:
        counts["due_now"] = conn.execute(
            update(d).where(d.c.state == PENDING, d.c.next_attempt_at > now, *where)
            .values(next_attempt_at=now, updated_at=now)).rowcount
    return counts


def purge(conn: Connection, cutoff: dt.datetime, *, dry_run: bool = False) -> dict[str, int]:
    """Delete delivered deliveries settled before ``cutoff``, then the ``done`` events
    settled before it that no delivery row refers to any more; the counts (what would
    be deleted, with ``dry_run``)."""
    d, o = deliveries, outbox
    old_delivered = and_(d.c.state == DELIVERED, d.c.updated_at < cutoff)
    old_done = and_(o.c.state == DONE, o.c.settled_at < cutoff)
    if dry_run:
        left = exists().where(d.c.outbox_id == o.c.id, ~old_delivered)
        return {
            "deliveries": conn.execute(select(func.count()).select_from(d)
                                       .where(old_delivered)).scalar_one(),
            "events": conn.execute(select(func.count()).select_from(o)
                                   .where(old_done, ~left)).scalar_one(),
        }
    n_deliveries = conn.execute(delete(d).where(old_delivered)).rowcount
    n_events = conn.execute(
        delete(o).where(old_done, ~exists().where(d.c.outbox_id == o.c.id))).rowcount
    return {"deliveries": int(n_deliveries), "events": int(n_events)}


# the operator's page (signalbus.web) --------------------------------------------------------


def settled_per_minute(conn: Connection, since: dt.datetime) -> dict[dt.datetime, dict[str, int]]:
    """Work settled per minute since ``since``: events ``done`` (every receiver ran, or
    failed ones went to rows of their own), deliveries ``delivered`` (a retry or replay
    that succeeded) and ``dead``, keyed by the minute (aware UTC). Minutes without any
    are absent. Reads the settled indexes, so its cost is the window's rows."""
    o, d = outbox, deliveries
    postgres = conn.dialect.name == "postgresql"

    def minute(column: Any) -> Any:
        if postgres:
            return func.date_trunc("minute", column)
        return func.strftime("%Y-%m-%d %H:%M", column)

    found: dict[dt.datetime, dict[str, int]] = {}

    def add(when: Any, key: str, count: int) -> None:
        if isinstance(when, str):  # SQLite
            when = dt.datetime.fromisoformat(when)
        when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        slot = found.setdefault(when.astimezone(dt.UTC),
                                {"done": 0, "delivered": 0, "dead": 0})
        slot[key] += int(count)

    em = minute(o.c.settled_at).label("m")
    for when, state, count in conn.execute(
            select(em, o.c.state, func.count()).where(o.c.state != PENDING,
                                                      o.c.settled_at >= since)
            .group_by(em, o.c.state)):
        add(when, "done" if state == DONE else "dead", count)
    dm = minute(d.c.updated_at).label("m")
    for when, state, count in conn.execute(
            select(dm, d.c.state, func.count()).where(d.c.state != PENDING,
                                                      d.c.updated_at >= since)
            .group_by(dm, d.c.state)):
        add(when, "delivered" if state == DELIVERED else "dead", count)
    return found


def find_event(conn: Connection, event_id: str) -> Any:
    """The outbox row of the event with this id (``id``, ``row_key``, ``payload``,
    ``state``, ``created_at``, ``settled_at``, ``last_error``, ``claimed_by``,
    ``claimed_until``), or ``None``: one probe of the ``event_id`` index, however large
    the table (an unknown id too)."""
    o = outbox
    return conn.execute(
        select(o.c.id, o.c.row_key, o.c.payload, o.c.state, o.c.created_at, o.c.settled_at,
               o.c.last_error, o.c.claimed_by, o.c.claimed_until)
        .where(o.c.event_id == event_id).order_by(o.c.id.desc()).limit(1)).first()


def event_deliveries(conn: Connection, outbox_id: int) -> list[Any]:
    """The delivery rows of one event row, in id order (``id``, ``receiver``, ``state``,
    ``attempts``, ``next_attempt_at``, ``last_error``, ``claimed_by``, ``claimed_until``,
    ``created_at``, ``updated_at``)."""
    d = deliveries
    return list(conn.execute(
        select(d.c.id, d.c.receiver, d.c.state, d.c.attempts, d.c.next_attempt_at,
               d.c.last_error, d.c.claimed_by, d.c.claimed_until, d.c.created_at,
               d.c.updated_at)
        .where(d.c.outbox_id == outbox_id).order_by(d.c.id)).all())


def problem_deliveries(conn: Connection, *, dead: bool, limit: int,
                       after: tuple[dt.datetime, int] | None = None) -> list[Any]:
    """One page of dead deliveries (``dead``), or of failing ones (pending after at
    least one failed attempt), newest first; ``after`` is the ``(updated_at, id)`` of
    the last row of the previous page (keyset pagination: a page costs the same however
    deep). Rows ``(id, outbox_id, event_id, signal, receiver, state, attempts,
    next_attempt_at, last_error, updated_at)``."""
    d = deliveries
    where: list[ColumnElement[bool]] = (
        [d.c.state == DEAD] if dead else [d.c.state == PENDING, d.c.attempts > 0])
    if after is not None:
        at, last = after
        where.append(or_(d.c.updated_at < at, and_(d.c.updated_at == at, d.c.id < last)))
    return list(conn.execute(
        select(d.c.id, d.c.outbox_id, d.c.event_id, d.c.signal, d.c.receiver, d.c.state,
               d.c.attempts, d.c.next_attempt_at, d.c.last_error, d.c.updated_at)
        .where(*where).order_by(d.c.updated_at.desc(), d.c.id.desc()).limit(limit)).all())


def dead_events(conn: Connection, limit: int) -> list[Any]:
    """The latest event rows that could not be read as events (``dead``), newest first:
    ``(id, payload, last_error, settled_at)``."""
    o = outbox
    return list(conn.execute(
        select(o.c.id, o.c.payload, o.c.last_error, o.c.settled_at)
        .where(o.c.state == DEAD).order_by(o.c.settled_at.desc(), o.c.id.desc())
        .limit(limit)).all())


def requeue_deliveries(conn: Connection, delivery_ids: Sequence[int],
                       now: dt.datetime) -> int:
    """Make these deliveries due now: a dead one pending again with a fresh count of
    attempts, a failing one (waiting for its next attempt) due at once. Deliveries
    already delivered, or claimed by a worker, are left alone. The number changed."""
    if not delivery_ids:
        return 0
    d = deliveries
    ids = list(delivery_ids)
    free = or_(d.c.claimed_until.is_(None), d.c.claimed_until <= now)
    n = conn.execute(update(d).where(d.c.id.in_(ids), d.c.state == DEAD).values(
        state=PENDING, attempts=0, next_attempt_at=now, claimed_until=None,
        claimed_by=None, updated_at=now)).rowcount
    n += conn.execute(update(d).where(d.c.id.in_(ids), d.c.state == PENDING,
                                      d.c.next_attempt_at > now, free)
                      .values(next_attempt_at=now, updated_at=now)).rowcount
    return int(n)


def deliveries_per_receiver(conn: Connection) -> dict[str, dict[str, int]]:
    """Delivery rows per receiver and state (``pending``, ``delivered``, ``dead``): the
    receivers tracked on their own (retries, replays, rows queued behind a retry)."""
    d = deliveries
    out: dict[str, dict[str, int]] = {}
    for receiver, state, count in conn.execute(
            select(d.c.receiver, d.c.state, func.count()).group_by(d.c.receiver, d.c.state)):
        out.setdefault(receiver, {PENDING: 0, DELIVERED: 0, DEAD: 0})[state] = int(count)
    return dict(sorted(out.items()))


def pending_summary(conn: Connection) -> tuple[int, int, dt.datetime | None]:
    """Pending events, pending deliveries, and when the oldest of them was stored
    (``None`` when nothing is pending): what metrics and health checks poll, read from
    the partial indexes of pending rows only, so it stays cheap however much is settled."""
    o, d = outbox, deliveries
    events, oldest_event = conn.execute(
        select(func.count(), func.min(o.c.created_at)).where(o.c.state == PENDING)).one()
    ndeliveries, oldest_delivery = conn.execute(
        select(func.count(), func.min(d.c.created_at)).where(d.c.state == PENDING)).one()
    found = [t if t.tzinfo else t.replace(tzinfo=dt.UTC)
             for t in (oldest_event, oldest_delivery) if t is not None]
    return int(events), int(ndeliveries), min(found) if found else None


def overview(conn: Connection, since: dt.datetime) -> dict[str, Any]:
    """The overview page's counts, kept cheap on a large outbox: events per state
    (:func:`event_counts`: ``done`` estimated on a large PostgreSQL table), and per
    signal — the payload read only for pending events (their partial index) and for
    events settled since ``since`` (the settled index) — pending, done since ``since``,
    retrying and dead deliveries (the deliveries table has a ``signal`` column). The
    result: ``{"events": {state: n}, "estimated": bool, "signals": {signal: {"pending",
    "done_recent", "retrying", "dead"}}}``."""
    o, d = outbox, deliveries
    events, estimated = event_counts(conn)
    signals: dict[str, dict[str, int]] = {}

    def slot(signal: Any) -> dict[str, int]:
        return signals.setdefault(str(signal), {"pending": 0, "done_recent": 0,
                                                "retrying": 0, "dead": 0})

    signal = o.c.payload["signal"].as_string().label("signal")
    for name, count in conn.execute(select(signal, func.count()).where(o.c.state == PENDING)
                                    .group_by(signal)):
        slot(name)["pending"] += int(count)
    for name, count in conn.execute(select(signal, func.count())
                                    .where(o.c.state != PENDING, o.c.settled_at >= since,
                                           o.c.state == DONE)
                                    .group_by(signal)):
        slot(name)["done_recent"] += int(count)
    for state, key in ((PENDING, "retrying"), (DEAD, "dead")):  # their indexes, not
        for name, count in conn.execute(                      # every delivered row
                select(d.c.signal, func.count()).where(d.c.state == state)
                .group_by(d.c.signal)):
            slot(name)[key] += int(count)
    return {"events": events, "estimated": estimated,
            "signals": dict(sorted(signals.items()))}


# hand-over to Celery (signalbus.celery) ------------------------------------------------------
#
# In celery mode a relay expands each claimed event into one delivery row per receiver
# (insert_deliveries + ack_events, one transaction), then hands due deliveries that head
# their (row, receiver) chain over to Celery with claim_deliveries, its ``by`` being a
# hand-over token ``celery:…`` new for each hand-over. The lease is how long a handed-over
# delivery may stay unreported before the relay hands it over again (with a new token). A
# task takes its delivery (take_handed_over) only while the token and attempt it carries
# are still the delivery's, and records the outcome with record_handed_over.

HANDOVER_PREFIX = "celery:"
"""``claimed_by`` of a delivery handed over to Celery starts with this."""

_LOCK_SPACE = 0x5B5B
"""The first key of signalbus's PostgreSQL advisory locks (the second: a delivery id)."""


def take_handed_over(conn: Connection, delivery_id: int, *, token: str, attempt: int,
                     until: dt.datetime) -> Row[Any] | None:
    """Take a handed-over delivery for attempt number ``attempt``: extend its lease to
    ``until`` and return ``(outbox_id, event_id, receiver, signal, row_key, payload)``,
    or ``None`` when the delivery is no longer this hand-over's (settled, handed over
    again under another token, or already past this attempt): a redelivered task then
    does nothing."""
    d, o = deliveries, outbox
    mine = (d.c.id == delivery_id, d.c.state == PENDING, d.c.claimed_by == token,
            d.c.attempts == attempt - 1)
    if conn.dialect.name == "postgresql":  # one round trip: UPDATE … FROM … RETURNING
        row: Any = conn.execute(
            update(d).where(*mine, o.c.id == d.c.outbox_id).values(claimed_until=until)
            .returning(d.c.outbox_id, d.c.event_id, d.c.receiver, d.c.signal, d.c.row_key,
                       o.c.payload)).first()
        return row  # type: ignore[no-any-return]
    # SQLite's RETURNING cannot name the FROM table's columns
    taken = conn.execute(update(d).where(*mine).values(claimed_until=until)
                         .returning(d.c.outbox_id)).first()
    if taken is None:
        return None
    row = conn.execute(
        select(d.c.outbox_id, d.c.event_id, d.c.receiver, d.c.signal, d.c.row_key,
               o.c.payload)
        .select_from(d.outerjoin(o, o.c.id == d.c.outbox_id))
        .where(d.c.id == delivery_id)).first()
    return row  # type: ignore[no-any-return]


def record_handed_over(conn: Connection, delivery_id: int, *, token: str, state: str,
                       attempts: int, now: dt.datetime,
                       next_attempt_at: dt.datetime | None = None,
                       until: dt.datetime | None = None, error: str | None = None) -> bool:
    """Record the outcome of attempt ``attempts`` of a delivery handed over under
    ``token``: ``delivered``, ``dead``, or ``pending`` again from ``next_attempt_at``
    (``until`` given: the hand-over keeps its claim until then, because the task itself
    is retried by Celery; else the claim is cleared and the relay hands it over when it
    is due). Whether the delivery was still this hand-over's (``False``: its lease
    lapsed and it was handed over again, which the caller logs)."""
    d = deliveries
    values: dict[str, Any] = {"state": state, "attempts": attempts, "updated_at": now,
                              "claimed_until": until, "claimed_by": token if until else None}
    if state != DELIVERED:
        values["last_error"] = error
        values["next_attempt_at"] = next_attempt_at or now
    return conn.execute(
        update(d).where(d.c.id == delivery_id, d.c.state == PENDING, d.c.claimed_by == token)
        .values(**values)).rowcount == 1


def handed_over(conn: Connection, now: dt.datetime) -> int:
    """How many deliveries are handed over to Celery and not yet reported (pending, their
    hand-over lease running)."""
    d = deliveries
    return int(conn.execute(
        select(func.count()).select_from(d)
        .where(d.c.state == PENDING, d.c.claimed_until > now,
               d.c.claimed_by.startswith(HANDOVER_PREFIX, autoescape=True))).scalar_one())


def try_lock_delivery(conn: Connection, delivery_id: int) -> bool:
    """PostgreSQL: take the session advisory lock of a delivery without waiting; whether it
    was free. Two copies of one task (a broker that redelivers a message still running)
    cannot run a receiver at the same time; the lock goes with the connection when the
    process dies. The same round trip turns ``synchronous_commit`` off for the task's own
    statements, as for the worker's (:data:`SESSION`): an outcome lost in a server crash
    is a repeat, which at-least-once allows; :func:`unlock_delivery` resets it before the
    connection goes back to the pool (and to the receivers). Always ``True`` elsewhere."""
    if conn.dialect.name != "postgresql":
        return True
    row = conn.execute(select(func.set_config("synchronous_commit", "off", False),
                              func.pg_try_advisory_lock(*_lock_keys(delivery_id)))).one()
    return bool(row[1])


def unlock_delivery(conn: Connection, delivery_id: int, *, locked: bool = True) -> None:
    """Release :func:`try_lock_delivery`'s lock (when it was ``locked``) and reset
    ``synchronous_commit`` (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        if locked:
            conn.execute(select(func.pg_advisory_unlock(*_lock_keys(delivery_id))))
        conn.exec_driver_sql("RESET synchronous_commit")


def _lock_keys(delivery_id: int) -> tuple[Any, Any]:
    # the (int4, int4) form: the first key keeps signalbus's locks apart from the app's
    return (cast(literal(_LOCK_SPACE), Integer),
            cast(literal(delivery_id % 2**31), Integer))


# changes captured by database triggers (signalbus.outbox.changes) ---------------------------

_CHANGES_LOCK = int.from_bytes(b"sbchange", "big") & 0x7FFFFFFFFFFFFFFF
"""The advisory lock key one converter holds while it turns change rows into events."""


def try_lock_changes(conn: Connection) -> bool:
    """Take the converter's lock for the current transaction, if no one holds it."""
    return bool(conn.execute(select(func.pg_try_advisory_xact_lock(_CHANGES_LOCK))).scalar())


def take_changes(conn: Connection, limit: int) -> list[Row[Any]]:
    """The change rows of the writer transactions whose first statements are the oldest
    ``limit`` readable ones: every statement of those transactions, in id order."""
    c = changes.c
    first = (select(c.txid).where(c.last_error.is_(None)).order_by(c.id).limit(limit)
             .scalar_subquery())
    stmt = (select(c.id, c.txid, c.source_table, c.op, c.created_at, c.context)
            .where(c.last_error.is_(None), c.txid.in_(first)).order_by(c.id))
    return list(conn.execute(stmt))


def changed_rows(conn: Connection, table: Any, change_ids: Sequence[int]) -> list[Row[Any]]:
    """The rows captured by the triggers of ``table`` (a
    :class:`~signalbus.capture.triggers.TriggerTable`) in ``change_ids``, typed by the
    model's column types (the Python values the ORM would have loaded):
    ``(change id, 0 for old / 1 for new, *stored columns, *digests)``."""
    from sqlalchemy import column, text

    from ..capture.triggers import quote

    stored = table.stored_columns()
    names = ", ".join(f"r.{quote(name)}" for name in table.stored)
    order = ", ".join(f"r.{quote(name)}" for name, key in table.columns if key in table.pk)
    stmt = text(f"""
        SELECT r.change_id, r.side, {names} FROM {table.qualified_rows} r
        WHERE r.change_id = ANY(:ids) ORDER BY r.change_id, r.side, {order}
    """).columns(column("signalbus_change_id", BigInteger), column("signalbus_side", Integer),
                 *stored, *(column(f"signalbus_hidden_{i}", Text)
                            for i in range(len(table.hidden))))
    return list(conn.execute(stmt, {"ids": list(change_ids)}))


def delete_changed_rows(conn: Connection, table: Any, change_ids: Sequence[int]) -> None:
    """Delete the rows of ``change_ids`` from ``table``'s rows table."""
    from sqlalchemy import text

    conn.execute(text(f"DELETE FROM {table.qualified_rows} WHERE change_id = ANY(:ids)"),
                 {"ids": list(change_ids)})


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def delete_changes(conn: Connection, change_ids: Sequence[int]) -> None:
    """Delete change rows turned into events."""
    conn.execute(delete(changes).where(changes.c.id.in_(list(change_ids))))


def fail_changes(conn: Connection, errors: dict[int, str]) -> None:
    """Record why change rows could not be turned into events (they are skipped until
    :func:`retry_changes`)."""
    conn.execute(update(changes).where(changes.c.id == bindparam("change_id"))
                 .values(last_error=bindparam("error")),
                 [{"change_id": i, "error": e} for i, e in errors.items()])


def retry_changes(conn: Connection) -> int:
    """Make every failed change row eligible again; how many."""
    return int(conn.execute(update(changes).where(changes.c.last_error.is_not(None))
                            .values(last_error=None)).rowcount)


def changes_summary(conn: Connection) -> dict[str, Any]:
    """Change rows waiting to be turned into events, and the failed ones (with the
    latest error)."""
    c = changes.c
    waiting = conn.execute(select(func.count()).where(c.last_error.is_(None))).scalar() or 0
    failed = conn.execute(select(func.count()).where(c.last_error.is_not(None))).scalar() or 0
    latest = conn.execute(select(c.id, c.source_table, c.last_error)
                          .where(c.last_error.is_not(None)).order_by(c.id.desc())
                          .limit(1)).first()
    return {"waiting": int(waiting), "failed": int(failed),
            "latest_error": None if latest is None else
            f"change {latest.id} of {latest.source_table}: {latest.last_error}"}
