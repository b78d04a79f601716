"""The operator's functions: status, retry, replay, purge. Each returns data (the CLI's
``--json`` output) and checks the schema first, so that a database without the outbox
tables, or with another schema version, gives a message naming the fix."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from ..errors import BindingError, ConfigurationError
from ..redaction import redact
from . import schema, sql
from .schema import DEAD, DELIVERED, DONE, PENDING, deliveries, outbox
from .settings import OutboxSettings, aware, utcnow

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["BadValue", "parse_duration", "parse_when", "purge", "replay", "retry", "status"]


class BadValue(ConfigurationError, ValueError):
    """An operator's value that cannot be used (a duration, a time); says which and why."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_MAX_DAYS = 36500


def parse_duration(text: str) -> dt.timedelta:
    """``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` as a timedelta (at
    most 100 years)."""
    match = _DURATION.match(text)
    if not match:
        raise BadValue(
            f"{text!r} is not a duration; write a number of seconds or e.g. 90s, 15m, 12h, 7d."
        )
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds > _MAX_DAYS * 86400:
        raise BadValue(f"{text!r} is longer than {_MAX_DAYS} days (100 years); give a "
                       "shorter duration, e.g. 3650d.")
    return dt.timedelta(seconds=seconds)


def parse_when(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 time (UTC if it has no offset), or a duration meaning that long ago."""
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadValue(
            f"{text!r} is neither an ISO 8601 time (2024-05-01T12:00) nor a duration "
            "meaning 'that long ago' (2h, 7d)."
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _checked(conn: Connection) -> Connection:
    schema.check(conn)
    return conn


def _signal_of() -> ColumnElement[Any]:
    signal: ColumnElement[Any] = outbox.c.payload["signal"].as_string()
    return signal


def status(engine: Engine, *, dead_limit: int = 10) -> dict[str, Any]:
    """Events and deliveries per state, per signal, what is due and claimed, the age of
    the oldest pending work, and the latest dead ones (errors redacted)."""
    o, d = outbox, deliveries
    now = utcnow()
    with engine.connect() as conn:
        _checked(conn)
        events = {PENDING: 0, DONE: 0, DEAD: 0}
        per_signal: dict[str, dict[str, int]] = {}
        rows = select(_signal_of().label("signal"), o.c.state).subquery()
        for signal, state, count in conn.execute(
                select(rows.c.signal, rows.c.state, func.count())
                .group_by(rows.c.signal, rows.c.state)):
            events[state] = events.get(state, 0) + count
            key = {DONE: "done", PENDING: "pending", DEAD: "dead"}.get(state, state)
            per_signal.setdefault(str(signal), {"pending": 0, "done": 0, "retrying": 0,
                                                "dead": 0})[key] += count
        states = {PENDING: 0, DELIVERED: 0, DEAD: 0}
        for signal, state, count in conn.execute(
                select(d.c.signal, d.c.state, func.count()).group_by(d.c.signal, d.c.state)):
            states[state] = states.get(state, 0) + count
            counts = per_signal.setdefault(signal, {"pending": 0, "done": 0, "retrying": 0,
                                                    "dead": 0})
            if state == PENDING:
                counts["retrying"] += count
            elif state == DEAD:
                counts["dead"] += count
        free_o = (o.c.claimed_until.is_(None)) | (o.c.claimed_until <= now)
        oldest_o, due_o, claimed_o = conn.execute(select(
            func.min(o.c.created_at), func.count().filter(free_o),
            func.count().filter(o.c.claimed_until > now),
        ).where(o.c.state == PENDING)).one()
        free_d = (d.c.claimed_until.is_(None)) | (d.c.claimed_until <= now)
        oldest_d, due_d, claimed_d = conn.execute(select(
            func.min(d.c.created_at), func.count().filter((d.c.next_attempt_at <= now) & free_d),
            func.count().filter(d.c.claimed_until > now),
        ).where(d.c.state == PENDING)).one()
        handed_over = sql.handed_over(conn, now)
        dead = [
            {"event_id": r.event_id, "signal": r.signal, "receiver": r.receiver,
             "attempts": r.attempts, "last_error": redact(r.last_error or ""),
             "at": aware(r.updated_at).isoformat()}
            for r in conn.execute(
                select(d.c.event_id, d.c.signal, d.c.receiver, d.c.attempts, d.c.last_error,
                       d.c.updated_at)
                .where(d.c.state == DEAD).order_by(d.c.updated_at.desc()).limit(dead_limit))
        ]
        dead += [
            {"event_id": (r.payload or {}).get("id") if isinstance(r.payload, dict) else None,
             "signal": (r.payload or {}).get("signal") if isinstance(r.payload, dict) else None,
             "receiver": None, "outbox_id": r.id, "attempts": 1,
             "last_error": redact(r.last_error or ""),
             "at": aware(r.settled_at).isoformat() if r.settled_at else None}
            for r in conn.execute(
                select(o.c.id, o.c.payload, o.c.last_error, o.c.settled_at)
                .where(o.c.state == DEAD).order_by(o.c.id.desc()).limit(dead_limit))
        ]
    oldest = [aware(t) for t in (oldest_o, oldest_d) if t is not None]
    return {
        "database": engine.dialect.name,
        "schema_version": schema.SCHEMA_VERSION,
        "events": events,
        "deliveries": states,
        "due": int(due_o) + int(due_d),
        "claimed": int(claimed_o) + int(claimed_d),
        "handed_over": handed_over,
        "oldest_pending_age_seconds": (
            round(max(0.0, (now - min(oldest)).total_seconds()), 3) if oldest else None),
        "signals": dict(sorted(per_signal.items())),
        "dead": dead,
    }


def retry(engine: Engine, settings: OutboxSettings, *, event_ids: Sequence[str] = (),
          signals: Sequence[str] = (), receivers: Sequence[str] = (),
          waiting: bool = False) -> dict[str, int]:
    """Make dead deliveries (and dead events) pending again with a fresh count of
    attempts; with ``waiting``, also make deliveries waiting for a retry due now."""
    with engine.begin() as conn:
        _checked(conn)
        counts = sql.requeue(conn, now=utcnow(), event_ids=event_ids, signals=signals,
                             receivers=receivers, waiting=waiting)
        if any(counts.values()):
            sql.notify(conn, settings)
    return counts


def replay(runtime: Runtime, engine: Engine, settings: OutboxSettings, *,
           signals: Sequence[str] = (), since: dt.datetime | None = None,
           until: dt.datetime | None = None, event_ids: Sequence[str] = (),
           receivers: Sequence[str] = (), progress: Callable[[int, int], None] | None = None,
           page_size: int = 500) -> dict[str, int]:
    """Deliver stored events again to the receivers their signals have now (or only
    ``receivers``): a pending delivery row per (event, receiver), due now, in commit
    order. Events still pending are left alone (they are delivered anyway).
    ``since``/``until`` select by the time the event was stored. ``progress(done,
    total)`` is called after every page."""
    from ..bindings import import_model

    o, d = outbox, deliveries
    where: list[ColumnElement[bool]] = [o.c.state != PENDING]
    if signals:
        where.append(_signal_of().in_(list(signals)))
    if event_ids:
        where.append(o.c.payload["id"].as_string().in_(list(event_ids)))
    if since is not None:
        where.append(o.c.created_at >= since)
    if until is not None:
        where.append(o.c.created_at < until)
    counts = {"events": 0, "inserted": 0, "reset": 0, "already_pending": 0, "unreadable": 0}
    senders: dict[str, Any] = {}

    def sender_of(model: Any) -> Any:
        if not isinstance(model, str):
            return None
        if model not in senders:
            try:
                senders[model] = import_model(model)
            except BindingError:
                senders[model] = None
        return senders[model]

    with engine.connect() as conn:
        _checked(conn)
        total = conn.execute(select(func.count()).select_from(o).where(*where)).scalar_one()
    with engine.connect() as conn:
        counts["already_pending"] = conn.execute(
            select(func.count()).select_from(o).where(o.c.state == PENDING, *where[1:])
        ).scalar_one()
    last = 0
    while True:
        with engine.begin() as conn:
            rows = conn.execute(select(o.c.id, o.c.row_key, o.c.payload)
                                .where(o.c.id > last, *where).order_by(o.c.id)
                                .limit(page_size)).all()
            if not rows:
                break
            last = rows[-1].id
            existing = {
                (r.outbox_id, r.receiver): (r.id, r.state)
                for r in conn.execute(select(d.c.id, d.c.outbox_id, d.c.receiver, d.c.state)
                                      .where(d.c.outbox_id.in_([r.id for r in rows])))
            }
            now = utcnow()
            reset: list[int] = []
            new: list[dict[str, Any]] = []
            for row in rows:
                payload = row.payload
                if not isinstance(payload, dict) or not isinstance(payload.get("signal"), str):
                    counts["unreadable"] += 1
                    continue
                names: list[str] = []
                for rec in runtime.receivers_for(payload["signal"],
                                                 sender_of(payload.get("model"))):
                    if rec.name not in names and (not receivers or rec.name in receivers):
                        names.append(rec.name)
                for name in names:
                    found = existing.get((row.id, name))
                    if found is None:
                        new.append(sql.new_delivery(row.id, str(payload.get("id")), name,
                                                    payload["signal"], row.row_key, now))
                    elif found[1] == PENDING:
                        counts["already_pending"] += 1
                    else:
                        reset.append(found[0])
            if reset:
                conn.execute(update(d).where(d.c.id.in_(reset)).values(
                    state=PENDING, attempts=0, next_attempt_at=now, claimed_until=None,
                    claimed_by=None, updated_at=now))
            sql.insert_deliveries(conn, new)
            if reset or new:
                sql.notify(conn, settings)
        counts["events"] += len(rows)
        counts["reset"] += len(reset)
        counts["inserted"] += len(new)
        if progress is not None:
            progress(counts["events"], total)
    return counts


def purge(engine: Engine, older_than: dt.timedelta, *, dry_run: bool = False
          ) -> dict[str, Any]:
    """Delete delivered deliveries and settled events older than ``older_than`` (what
    would be deleted, with ``dry_run``); pending and dead ones are kept."""
    now = utcnow()
    try:
        cutoff = now - older_than
    except OverflowError:
        raise BadValue(f"an age of {older_than.days} days reaches before the year 1; give "
                       f"at most {_MAX_DAYS} days.") from None
    with engine.begin() as conn:
        _checked(conn)
        counts = sql.purge(conn, cutoff, dry_run=dry_run)
    return {**counts, "before": cutoff.isoformat(), "dry_run": dry_run}
