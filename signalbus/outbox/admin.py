"""The operator's functions: status, retry, replay, purge. Each returns data (the CLI's
``--json`` output) and checks the schema first, so that a database without the outbox
tables, or with another schema version, gives a message naming the fix."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine

from ..errors import BindingError, ConfigurationError
from ..redaction import redact
from ..sqlite import IMMEDIATE
from . import schema, sql
from .schema import DEAD, DELIVERED, PENDING
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


def status(engine: Engine, *, dead_limit: int = 10, exact: bool = False) -> dict[str, Any]:
    """Events and deliveries per state, per signal, what is due and claimed, the age of
    the oldest pending work, and the latest dead ones (errors redacted).

    Everything is counted, except ``done`` events on a large PostgreSQL outbox (over
    :data:`~signalbus.outbox.sql.ESTIMATE_ABOVE` rows): their total is estimated from
    the table's statistics and their split per signal from a sample, and
    ``"estimated"`` lists those figures; ``exact`` counts them too (reads every stored
    payload: seconds per million events)."""
    now = utcnow()
    with engine.connect() as conn:
        _checked(conn)
        found = sql.counts(conn, now, exact=exact)
        dead_rows, dead_events = sql.latest_dead(conn, dead_limit)
        handed_over = sql.handed_over(conn, now)
    events = dict(found["states"])
    states = {PENDING: 0, DELIVERED: 0, DEAD: 0}
    per_signal: dict[str, dict[str, int]] = {}

    def of(signal: Any) -> dict[str, int]:
        return per_signal.setdefault(str(signal), {"pending": 0, "done": 0, "retrying": 0,
                                                   "dead": 0})

    for signal, state, count in found["events"]:
        of(signal)[state] = of(signal).get(state, 0) + count
    for signal, state, count in found["deliveries"]:
        states[state] = states.get(state, 0) + count
        if state == PENDING:
            of(signal)["retrying"] += count
        elif state == DEAD:
            of(signal)["dead"] += count
    dead = [
        {"event_id": r.event_id, "signal": r.signal, "receiver": r.receiver,
         "attempts": r.attempts, "last_error": redact(r.last_error or ""),
         "at": aware(r.updated_at).isoformat()}
        for r in dead_rows
    ]
    for r in dead_events:
        payload = r.payload if isinstance(r.payload, dict) else {}
        dead.append({"event_id": payload.get("id"), "signal": payload.get("signal"),
                     "receiver": None, "outbox_id": r.id, "attempts": 1,
                     "last_error": redact(r.last_error or ""),
                     "at": aware(r.settled_at).isoformat() if r.settled_at else None})
    oldest = [aware(t) for t in found["oldest"]]
    return {
        "database": engine.dialect.name,
        "schema_version": schema.SCHEMA_VERSION,
        "events": events,
        "estimated": ["events.done", "signals.done"] if found["estimated"] else [],
        "deliveries": states,
        "due": found["due"],
        "claimed": found["claimed"],
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

    where = sql.event_filter(signals=signals, event_ids=event_ids, since=since, until=until)
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
        total = sql.count_events(conn, where, pending=False)
        counts["already_pending"] = sql.count_events(conn, where, pending=True)
    last = 0
    # reads, then writes beside the workers: take SQLite's write lock first
    writer = engine.execution_options(**{IMMEDIATE: True})
    while True:
        with writer.begin() as conn:
            rows = sql.settled_events_after(conn, where, last, page_size)
            if not rows:
                break
            last = rows[-1].id
            existing = sql.deliveries_of(conn, [r.id for r in rows])
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
            sql.reset_deliveries(conn, reset, now)
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
