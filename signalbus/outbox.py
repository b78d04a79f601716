"""The outbox: committed events stored in the transaction that made them.

``SIGNALBUS_DELIVERY = "outbox"`` selects :class:`Outbox`. Right before the database
commit of a transaction that produced events, it writes them to two tables on the
session's own connection, so the events exist exactly when the change does:

* :data:`events` — one row per event: its id, signal, model, operation, primary key,
  the row key used for ordering, and the whole :meth:`Event.to_dict` payload;
* :data:`deliveries` — one row per (event, receiver durable name): its state
  (``pending``, ``delivered``, ``dead``), attempts, next attempt time, lease
  (``claimed_until`` / ``claimed_by``) and last error.

Each table gets one batched ``INSERT`` per commit (an ``executemany``), never one per
flush or per row. On PostgreSQL the same transaction runs ``pg_notify`` on the channel
``SIGNALBUS_OUTBOX_CHANNEL``; PostgreSQL sends the notification when, and only when,
the transaction commits, which wakes the workers (:mod:`signalbus.worker`) within
milliseconds. Nothing is delivered in the committing process.

The tables live in their own :data:`metadata`. Create them with :func:`create_all`, or
let Alembic see them::

    # env.py
    import signalbus.outbox
    target_metadata = [db.metadata, signalbus.outbox.metadata]

or copy them into the app's metadata with :func:`include_in`. They are created in the
connection's default schema (the ``search_path`` on PostgreSQL) and must be in the
same database as the rows whose events they store.

Settings (app config, or ``attach(config=...)``), with their defaults in
:data:`signalbus.settings.DEFAULTS`:

``SIGNALBUS_OUTBOX_BATCH`` (100)
    deliveries a worker claims at once.
``SIGNALBUS_OUTBOX_LEASE`` (60 s)
    how long a claim lasts; a worker renews it while it works through a batch, and
    the deliveries of a worker that died are claimed again once it expires.
``SIGNALBUS_OUTBOX_BACKOFF_BASE`` (2 s), ``SIGNALBUS_OUTBOX_BACKOFF_CAP`` (3600 s)
    the delay before attempt *n + 1* is ``min(cap, base * 2 ** (n - 1))``, of which a
    random part (up to half) is taken off: "equal jitter".
``SIGNALBUS_OUTBOX_MAX_ATTEMPTS`` (10)
    attempts before a failing delivery is ``dead``.
``SIGNALBUS_OUTBOX_POLL`` (2 s)
    how often a worker looks for due deliveries without being woken: the fallback
    when a notification is missed, and the only mechanism on SQLite.
``SIGNALBUS_OUTBOX_ACK_INTERVAL`` (0.5 s)
    the longest a worker keeps the results of a batch's successful deliveries before
    writing them (it writes them in one statement at the end of the batch, or sooner
    when the batch runs this long): a worker that dies repeats at most the deliveries
    it made since.
``SIGNALBUS_OUTBOX_NOTIFY`` (true), ``SIGNALBUS_OUTBOX_CHANNEL`` (``"signalbus"``)
    whether commits send a PostgreSQL ``NOTIFY``, and on which channel.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from .errors import ConfigurationError
from .events import Event, Outgoing
from .signals import is_stable_name

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .runtime import Runtime

__all__ = [
    "DEAD",
    "DELIVERED",
    "PENDING",
    "Outbox",
    "OutboxSettings",
    "create_all",
    "deliveries",
    "drop_all",
    "engine_of",
    "events",
    "include_in",
    "metadata",
    "row_key",
]

log = logging.getLogger("signalbus")

PENDING = "pending"
"""A delivery still to be made (first attempt, or a retry waiting for its time)."""
DELIVERED = "delivered"
"""The receiver returned without raising."""
DEAD = "dead"
"""Given up: :class:`~signalbus.Permanent`, too many attempts, or an unknown receiver.
``flask signalbus retry`` makes it pending again."""

metadata = MetaData()
"""The :class:`~sqlalchemy.MetaData` holding the outbox tables (give it to Alembic)."""

_PENDING_ONLY = text("state = 'pending'")
_SETTLED_ONLY = text("state <> 'pending'")
_DUE_ORDER = text("state = 'pending' AND next_attempt_at IS NOT NULL")

# SQLite gives auto-increment ids only to an INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "signalbus_events",
    metadata,
    Column("id", String(36), primary_key=True, comment="Event.id, the idempotency key"),
    Column("signal", String(255), nullable=False),
    Column("model", String(255), nullable=True),
    Column("op", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("pk", JSON, nullable=True),
    Column("row_key", String(255), nullable=True,
           comment="model and primary key: events of one row are delivered in order"),
    Column("payload", JSON, nullable=False, comment="Event.to_dict() without attempt"),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_signalbus_events_signal_occurred", "signal", "occurred_at"),
    Index("ix_signalbus_events_created", "created_at"),
    comment="signalbus outbox: committed events",
)
"""One row per stored event."""

deliveries = Table(
    "signalbus_deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True,
           comment="allocated at commit: the delivery order of one row's events"),
    Column("event_id", String(36), ForeignKey("signalbus_events.id", ondelete="CASCADE"),
           nullable=False),
    Column("receiver", String(255), nullable=False, comment="the receiver's durable name"),
    Column("signal", String(255), nullable=False),
    Column("row_key", String(255), nullable=True),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("claimed_by", String(255), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("event_id", "receiver", name="uq_signalbus_deliveries_event_receiver"),
    # what a worker claims: pending deliveries, oldest first (read in index order, so
    # that a claim stops after its batch however long the backlog). The claim's
    # "next_attempt_at <= now" implies the extra term of the predicate; the per-row
    # probe of the claim does not, so that it can only use the index below.
    Index("ix_signalbus_deliveries_pending", "id",
          postgresql_where=_DUE_ORDER, sqlite_where=_DUE_ORDER),
    # the per-row order check: an earlier pending delivery of the same row and receiver
    Index("ix_signalbus_deliveries_row", "receiver", "row_key", "id",
          postgresql_where=_PENDING_ONLY, sqlite_where=_PENDING_ONLY),
    # purge and status: delivered and dead ones by age. Not for pending ones, so that
    # the claim's per-row probe has ix_signalbus_deliveries_row alone to choose from
    # (with stale statistics that say pending rows are rare, the planner would
    # otherwise take this index and filter every pending row, for every row claimed)
    Index("ix_signalbus_deliveries_state_updated", "state", "updated_at",
          postgresql_where=_SETTLED_ONLY, sqlite_where=_SETTLED_ONLY),
    # (the unique constraint's index serves lookups by event_id)
    comment="signalbus outbox: one row per (event, receiver)",
    # room on each page, so that writing a lease (no indexed column) is a HOT update
    postgresql_with={"fillfactor": 70},
)
"""One row per (event, receiver durable name)."""


def create_all(engine: Engine | Connection) -> None:
    """Create the outbox tables (and indexes) that do not exist yet."""
    metadata.create_all(engine)


def drop_all(engine: Engine | Connection) -> None:
    """Drop the outbox tables."""
    metadata.drop_all(engine)


def include_in(target: MetaData) -> None:
    """Copy the outbox tables into ``target`` (the app's metadata), for
    ``db.create_all()`` or an Alembic setup that takes a single ``MetaData``."""
    for table in metadata.sorted_tables:
        if table.name not in target.tables:
            table.to_metadata(target)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (every outbox time is UTC)."""
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """``value`` as aware UTC: SQLite gives stored datetimes back without their zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


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


_URL = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]*(?::[^/\s@]*)?@?[^/\s]*)[^\s'\"]*", re.I)


def describe_error(exc: BaseException, limit: int = 2000) -> str:
    """``Type: message`` of a receiver's exception, as stored in ``last_error``.

    URLs are cut to their scheme and host, so that a webhook URL or a password in a
    connection string never reaches the table, ``flask signalbus status`` or a log.
    """
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def cut(match: re.Match[str]) -> str:
        head = match.group(1)
        scheme, _, rest = head.partition("://")
        host = rest.rpartition("@")[2]
        return f"{scheme}://{host}/…" if match.group(0) != head else f"{scheme}://{host}"

    text = _URL.sub(cut, text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclasses.dataclass(frozen=True)
class OutboxSettings:
    """The outbox's settings, read from the app config (see the module docstring)."""

    batch: int = 100
    lease: float = 60.0
    backoff_base: float = 2.0
    backoff_cap: float = 3600.0
    max_attempts: int = 10
    poll: float = 2.0
    ack_interval: float = 0.5
    notify: bool = True
    channel: str = "signalbus"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OutboxSettings:
        """Read and check the ``SIGNALBUS_OUTBOX_*`` keys."""
        from .settings import DEFAULTS

        def get(key: str, kind: type[Any], minimum: float | None = None,
                default: Any = None) -> Any:
            raw = config.get(key, DEFAULTS.get(key, default))
            try:
                if kind is bool and isinstance(raw, str):
                    value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
                else:
                    value = kind(raw)
            except (TypeError, ValueError):
                wanted = {int: "a whole number", float: "a number of seconds"}.get(kind, "text")
                raise ConfigurationError(f"{key} is {raw!r}; it must be {wanted}.") from None
            if minimum is not None and value < minimum:
                raise ConfigurationError(f"{key} is {raw!r}; it must be at least {minimum}.")
            return value

        channel = str(get("SIGNALBUS_OUTBOX_CHANNEL", str))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", channel):
            raise ConfigurationError(
                f"SIGNALBUS_OUTBOX_CHANNEL is {channel!r}; use a plain identifier "
                "(letters, digits and '_', at most 63 characters)."
            )
        return cls(
            batch=get("SIGNALBUS_OUTBOX_BATCH", int, 1),
            lease=get("SIGNALBUS_OUTBOX_LEASE", float, 0.1),
            backoff_base=get("SIGNALBUS_OUTBOX_BACKOFF_BASE", float, 0),
            backoff_cap=get("SIGNALBUS_OUTBOX_BACKOFF_CAP", float, 0),
            max_attempts=get("SIGNALBUS_OUTBOX_MAX_ATTEMPTS", int, 1),
            poll=get("SIGNALBUS_OUTBOX_POLL", float, 0.01),
            ack_interval=get("SIGNALBUS_OUTBOX_ACK_INTERVAL", float, 0, cls.ack_interval),
            notify=get("SIGNALBUS_OUTBOX_NOTIFY", bool),
            channel=channel,
        )


def engine_of(runtime: Runtime) -> Engine:
    """The engine of the database a runtime's sessions write to (and its outbox lives in).

    Flask-SQLAlchemy: ``db.engine`` of the runtime's app (its default bind). Plain
    SQLAlchemy: the ``bind`` of the attached ``sessionmaker`` / ``scoped_session``.
    """
    if runtime.db is not None:
        if runtime.app is not None:
            with runtime.app.app_context():
                return _sync_engine(runtime.db.engine)
        return _sync_engine(runtime.db.engine)
    factory = runtime.session_factory
    for holder in (factory, getattr(factory, "session_factory", None)):
        kw = getattr(holder, "kw", None)
        if isinstance(kw, dict) and kw.get("bind") is not None:
            return _sync_engine(kw["bind"])
    bind = getattr(factory, "bind", None)
    if bind is not None:
        return _sync_engine(bind)
    raise ConfigurationError(
        "signalbus cannot find the database of the outbox: attach a sessionmaker bound to "
        "an engine (sessionmaker(engine)), give init_app a Flask-SQLAlchemy db, or pass "
        "engine= to the worker."
    )


def _sync_engine(bind: Any) -> Engine:
    if isinstance(bind, Connection):
        return bind.engine
    if isinstance(bind, Engine):
        return bind
    raise ConfigurationError(
        f"the outbox needs a synchronous SQLAlchemy Engine, but the session is bound to "
        f"{bind!r}. With async sessions, pass engine=create_engine(<sync URL>) to the "
        "worker, and emit() with session=... so that the event joins a transaction."
    )


def _missing_tables(exc: sa_exc.DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return ("signalbus_" in text and ("does not exist" in text or "no such table" in text))


def _missing_tables_error() -> ConfigurationError:
    return ConfigurationError(
        "the signalbus outbox tables do not exist in this database. Create them with "
        "signalbus.outbox.create_all(engine), or add signalbus.outbox.metadata to your "
        "Alembic target_metadata and run a migration."
    )


class Outbox:
    """``SIGNALBUS_DELIVERY = "outbox"``: events stored with the transaction, delivered
    by ``flask signalbus worker`` (see :mod:`signalbus.worker`).

    Receivers are identified by their durable name; the runtime refuses a receiver
    without a stable one (a lambda, a function defined inside another) when it is
    connected or when the app starts, and :meth:`prepare` refuses one connected later.
    """

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

    # rows ---------------------------------------------------------------------------

    def receiver_names(self, sender: Any, signal: str) -> list[str]:
        """The durable names of the receivers an event of ``signal`` from ``sender``
        goes to, in delivery order."""
        names: list[str] = []
        for rec in self.runtime.receivers_for(signal, sender):
            if not is_stable_name(rec.name):
                raise ConfigurationError(
                    f"receiver {rec.name!r} of signal {rec.signal!r} has no stable name, "
                    "which SIGNALBUS_DELIVERY='outbox' needs to track its deliveries "
                    "across restarts. Define it at module level, or give it one with name=..."
                )
            if rec.name in names:
                if (signal, rec.name) not in self._warned:
                    self._warned.add((signal, rec.name))
                    log.error(
                        "two receivers of signal %r share the durable name %r; the outbox "
                        "delivers to the first only. Give each a name of its own with name=...",
                        signal, rec.name,
                    )
                continue
            names.append(rec.name)
        return names

    def rows(self, items: Iterable[Outgoing], now: dt.datetime | None = None
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The ``events`` and ``deliveries`` rows of ``items``, in order."""
        now = now or utcnow()
        event_rows: list[dict[str, Any]] = []
        delivery_rows: list[dict[str, Any]] = []
        for sender, event in items:
            payload = event.to_dict()
            del payload["attempt"]
            key = row_key(event)
            event_rows.append({
                "id": event.id,
                "signal": event.signal,
                "model": event.model,
                "op": event.op,
                "source": event.source,
                "pk": event.pk,
                "row_key": key,
                "payload": payload,
                "occurred_at": event.occurred_at,
                "created_at": now,
            })
            for name in self.receiver_names(sender, event.signal):
                delivery_rows.append(new_delivery(event.id, name, event.signal, key, now))
        return event_rows, delivery_rows

    def store(self, connection: Connection, items: Sequence[Outgoing]) -> None:
        """Insert the rows of ``items`` on ``connection`` (inside its transaction):
        one ``executemany`` per table, then ``pg_notify`` on PostgreSQL."""
        event_rows, delivery_rows = self.rows(items)
        if not event_rows:
            return
        try:
            connection.execute(events.insert(), event_rows)
            if delivery_rows:
                connection.execute(deliveries.insert(), delivery_rows)
        except sa_exc.DBAPIError as exc:
            if _missing_tables(exc):
                raise _missing_tables_error() from exc
            raise
        if delivery_rows:
            notify(connection, self.settings)

    # the Backend protocol --------------------------------------------------------------

    def prepare(self, session: Session, events: list[Outgoing]) -> None:
        """Write the transaction's events inside it, right before its commit."""
        self.store(session.connection(), events)

    def committed(self, events: list[Outgoing]) -> None:
        """Nothing to do: the events were stored (and the NOTIFY queued) by :meth:`prepare`."""

    def emit(self, sender: Any, event: Event) -> None:
        """Store an event emitted without a session, in a transaction of its own."""
        with self.engine.begin() as connection:
            self.store(connection, [(sender, event)])


def new_delivery(event_id: str, receiver: str, signal: str, key: str | None,
                 now: dt.datetime) -> dict[str, Any]:
    """A ``deliveries`` row due now."""
    return {
        "event_id": event_id,
        "receiver": receiver,
        "signal": signal,
        "row_key": key,
        "state": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_until": None,
        "claimed_by": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }


def notify(connection: Connection, settings: OutboxSettings) -> None:
    """Queue a ``NOTIFY`` on PostgreSQL; the server sends it when the transaction commits
    (and never if it rolls back). A no-op on other databases or with notify off."""
    if settings.notify and connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_notify(settings.channel, "")))
