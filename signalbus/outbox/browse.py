"""What the operator's page (:mod:`signalbus.web`) shows and does, as data.

Like :mod:`~signalbus.outbox.admin`, each function checks the schema, runs the
statements of :mod:`~signalbus.outbox.sql` and returns plain data: lists and dicts of
JSON values, every stored error redacted (:func:`signalbus.redaction.redact`), times as
aware UTC datetimes. A page (or a script) only presents them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from ..redaction import redact
from . import schema, sql
from .schema import DEAD, DELIVERED, DONE, PENDING
from .settings import OutboxSettings, aware, utcnow

__all__ = ["event", "lag", "overview", "per_receiver", "problems", "retry_deliveries", "throughput"]


def throughput(engine: Engine, *, minutes: int = 60,
               now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """One entry per minute of the last ``minutes`` (oldest first, the current minute
    last, empty minutes included): ``{"minute", "done", "delivered", "dead"}`` —
    events settled, retried or replayed deliveries that succeeded, deliveries and
    events given up."""
    now = now or utcnow()
    end = now.replace(second=0, microsecond=0)
    start = end - dt.timedelta(minutes=minutes - 1)
    with engine.connect() as conn:
        schema.check(conn)
        found = sql.settled_per_minute(conn, start)
    out = []
    for i in range(minutes):
        minute = start + dt.timedelta(minutes=i)
        counts = found.get(minute, {"done": 0, "delivered": 0, "dead": 0})
        out.append({"minute": minute, **counts})
    return out


def lag(engine: Engine, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """What is waiting, cheaply (pending rows only): ``{"pending_events",
    "pending_deliveries", "oldest_pending_age_seconds"}`` (``None`` when nothing is
    pending). For metrics and ``signalbus status --fail-if-lag``."""
    now = now or utcnow()
    with engine.connect() as conn:
        schema.check(conn)
        events, ndeliveries, oldest = sql.pending_summary(conn)
    return {
        "pending_events": events, "pending_deliveries": ndeliveries,
        "oldest_pending_age_seconds": (
            round(max(0.0, (now - oldest).total_seconds()), 3) if oldest else None),
    }


def overview(engine: Engine, *, recent: dt.timedelta = dt.timedelta(hours=1),
             dead_limit: int = 5, now: dt.datetime | None = None) -> dict[str, Any]:
    """What the overview page shows, cheap on a large outbox (see
    :func:`signalbus.outbox.sql.overview`): ``events`` per state (``estimated``: whether
    ``done`` is an estimate, on a large PostgreSQL outbox); ``deliveries`` per
    state; ``signals``: per signal, pending events, events done within ``recent``,
    retrying and dead deliveries; ``receivers``: :func:`per_receiver`; the oldest
    pending age (:func:`lag`); the ``dead_limit`` latest dead deliveries; ``captured``
    (PostgreSQL): statements captured by triggers ``waiting`` to be turned into events
    and ``failed`` ones, with the latest error."""
    now = now or utcnow()
    with engine.connect() as conn:
        schema.check(conn)
        counts = sql.overview(conn, now - recent)
        events, ndeliveries, oldest = sql.pending_summary(conn)
        receivers = sql.deliveries_per_receiver(conn)
        latest = sql.problem_deliveries(conn, dead=True, limit=dead_limit)
        # statements captured by database triggers, not yet turned into events
        captured = sql.changes_summary(conn) if conn.dialect.name == "postgresql" else None
    states = {PENDING: 0, DELIVERED: 0, DEAD: 0}
    for per_state in receivers.values():
        for state, n in per_state.items():
            states[state] = states.get(state, 0) + n
    return {
        "events": counts["events"],
        "estimated": counts["estimated"],
        "deliveries": states,
        "signals": counts["signals"],
        "receivers": receivers,
        "recent_seconds": recent.total_seconds(),
        "captured": None if captured is None else {
            "waiting": captured["waiting"], "failed": captured["failed"],
            "latest_error": _error(captured["latest_error"])},
        "oldest_pending_age_seconds": (
            round(max(0.0, (now - oldest).total_seconds()), 3) if oldest else None),
        "dead": [{
            "id": r.id, "event_id": r.event_id, "signal": r.signal, "receiver": r.receiver,
            "attempts": r.attempts, "last_error": _error(r.last_error),
            "updated_at": aware(r.updated_at),
        } for r in latest],
    }


def per_receiver(engine: Engine) -> dict[str, dict[str, int]]:
    """Delivery rows per receiver and state (``pending``, ``delivered``, ``dead``).
    Receivers that never failed have none: their runs are counted with the events."""
    with engine.connect() as conn:
        schema.check(conn)
        return sql.deliveries_per_receiver(conn)


def _error(text: str | None) -> str:
    return redact(text or "")


def _shown(value: Any, hidden: Collection[str]) -> Any:
    """A payload value as the page shows it: keys naming a redacted column dropped,
    text redacted (a URL, a credential inside a value)."""
    if isinstance(value, Mapping):
        return {str(k): _shown(v, hidden) for k, v in value.items()
                if not any(part in str(k).lower() for part in hidden)}
    if isinstance(value, list):
        return [_shown(v, hidden) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def event(engine: Engine, event_id: str, *, receivers: Sequence[str] = (),
          hidden: Collection[str] = ("password", "secret", "token", "api_key")
          ) -> dict[str, Any] | None:
    """An event and what became of it, or ``None`` if no stored event has this id.

    ``event``: its stored fields (``data``, ``changes``, ``context`` with keys naming a
    ``hidden`` column dropped and text redacted); ``state`` of its row (``pending``,
    ``done``, ``dead``); ``outcome``: ``pending`` (not run yet), ``delivered`` (every
    receiver), ``retrying`` (some receiver waits for another attempt) or ``dead`` (some
    receiver, or the row, was given up); ``deliveries``: one entry per receiver — those of
    ``receivers`` (the receivers its signal has now) without a row of their own ran with
    the event (``delivered`` once the event is ``done``), the others as their row says
    (attempts, next attempt, last error)."""
    with engine.connect() as conn:
        schema.check(conn)
        row = sql.find_event(conn, event_id)
        if row is None:
            return None
        rows = sql.event_deliveries(conn, row.id)
    payload = row.payload if isinstance(row.payload, dict) else {}
    tracked = []
    names = set()
    for d in rows:
        names.add(d.receiver)
        tracked.append({
            "id": d.id, "receiver": d.receiver, "state": d.state, "attempts": d.attempts,
            "next_attempt_at": aware(d.next_attempt_at) if d.state == PENDING else None,
            "last_error": _error(d.last_error), "claimed_by": d.claimed_by,
            "updated_at": aware(d.updated_at), "own_row": True,
        })
    untracked = [{
        "id": None, "receiver": name,
        "state": {DONE: "delivered", PENDING: "pending", DEAD: "not run"}.get(row.state,
                                                                              row.state),
        "attempts": 1 if row.state == DONE else 0, "next_attempt_at": None,
        "last_error": "", "claimed_by": row.claimed_by if row.state == PENDING else None,
        "updated_at": aware(row.settled_at) if row.settled_at else None, "own_row": False,
    } for name in receivers if name not in names]
    shown = {k: _shown(v, hidden) for k, v in payload.items()
             if k in ("data", "changes", "context", "pk")}
    states = {d["state"] for d in untracked + tracked}
    outcome = ("pending" if row.state == PENDING else "dead" if DEAD in states or
               row.state == DEAD else "retrying" if PENDING in states else "delivered")
    return {
        "outbox_id": row.id,
        "id": str(payload.get("id", event_id)),
        "signal": payload.get("signal"),
        "model": payload.get("model"),
        "op": payload.get("op"),
        "source": payload.get("source"),
        "occurred_at": payload.get("occurred_at"),
        "row_key": row.row_key,
        "state": row.state,
        "outcome": outcome,
        "stored_at": aware(row.created_at),
        "settled_at": aware(row.settled_at) if row.settled_at else None,
        "last_error": _error(row.last_error),
        "claimed_by": row.claimed_by if row.state == PENDING else None,
        "payload": shown,
        "deliveries": untracked + tracked,
    }


def problems(engine: Engine, *, dead: bool, limit: int = 50,
             after: tuple[dt.datetime, int] | None = None) -> dict[str, Any]:
    """One page of dead (``dead``) or failing deliveries, newest first, errors
    redacted: ``{"items": [...], "next": (updated_at, id) | None}`` — ``next`` is the
    ``after`` of the following page. With ``dead``, the first page also lists the dead
    event rows (``"events"``)."""
    with engine.connect() as conn:
        schema.check(conn)
        rows = sql.problem_deliveries(conn, dead=dead, limit=limit + 1, after=after)
        events = sql.dead_events(conn, limit) if dead and after is None else []
    more = len(rows) > limit
    rows = rows[:limit]
    items = [{
        "id": r.id, "outbox_id": r.outbox_id, "event_id": r.event_id, "signal": r.signal,
        "receiver": r.receiver, "state": r.state, "attempts": r.attempts,
        "next_attempt_at": aware(r.next_attempt_at) if r.state == PENDING else None,
        "last_error": _error(r.last_error), "updated_at": aware(r.updated_at),
    } for r in rows]
    return {
        "items": items,
        "next": (items[-1]["updated_at"], items[-1]["id"]) if more and items else None,
        "events": [{
            "outbox_id": r.id,
            "event_id": r.payload.get("id") if isinstance(r.payload, dict) else None,
            "signal": r.payload.get("signal") if isinstance(r.payload, dict) else None,
            "last_error": _error(r.last_error),
            "settled_at": aware(r.settled_at) if r.settled_at else None,
        } for r in events],
    }


def retry_deliveries(engine: Engine, settings: OutboxSettings,
                     delivery_ids: Sequence[int]) -> int:
    """Make these deliveries due now (dead ones pending again with a fresh count of
    attempts, failing ones at once) and wake the workers; the number changed."""
    with engine.begin() as conn:
        schema.check(conn)
        n = sql.requeue_deliveries(conn, delivery_ids, utcnow())
        if n:
            sql.notify(conn, settings)
    return n
