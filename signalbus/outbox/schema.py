"""The outbox tables, their states and the schema version.

* :data:`outbox` (``signalbus_outbox``) — one row per committed event, written in the
  committing transaction: its order (``id``), its row key and the
  :meth:`~signalbus.Event.to_dict` payload (which holds the event id and signal). A
  worker claims it (``claimed_until`` / ``claimed_by``), runs every receiver of its
  signal, and settles it: ``done`` when every receiver has run or has a delivery row
  of its own; ``dead`` when the row cannot be read as an event (``last_error`` says
  why).
* :data:`deliveries` (``signalbus_outbox_deliveries``) — one row per (event, receiver)
  that needs tracking on its own: a receiver that failed and is retried (``pending``,
  with ``attempts`` and ``next_attempt_at``), gave up (``dead``) or later succeeded
  (``delivered``); a receiver whose earlier event of the same row is still being
  retried (queued behind it, so that order per row is kept); a replay. The happy path
  writes none.
* :data:`changes` (``signalbus_outbox_changes``) — statements captured by the database
  (``bind(..., capture="trigger")``, PostgreSQL): one row per statement, written by the
  generated trigger in the writer's transaction, with the writer's transaction id and
  its ``signalbus.context``; the rows the statement changed are in the table's own rows
  table (``signalbus_rows_<table>``, generated with the triggers). A worker turns each
  transaction's statements into events (coalesced as ORM capture coalesces them) in
  :data:`outbox` and deletes them, in one transaction (:mod:`signalbus.outbox.changes`);
  a statement it cannot turn into events keeps ``last_error`` and is left for the
  operator.
* :data:`schema_version` (``signalbus_outbox_schema``) — one row: :data:`SCHEMA_VERSION`.
  A worker or command pointed at a database with another version (or with the tables
  of an earlier signalbus) stops with a message naming the upgrade step
  (:func:`check`).

All three live in :data:`metadata`: give it to Alembic, or :func:`include_in` the
app's own. The version row is written when the table is created (by ``create_all``,
``metadata.create_all`` or Alembic's ``op.create_table`` through :func:`stamp`).
"""

from __future__ import annotations

from typing import Any

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
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigurationError

__all__ = [
    "DEAD",
    "changes",
    "DELIVERED",
    "DONE",
    "PENDING",
    "SCHEMA_VERSION",
    "SchemaMismatch",
    "check",
    "create_all",
    "deliveries",
    "drop_all",
    "include_in",
    "metadata",
    "outbox",
    "schema_version",
    "stamp",
    "upgrade_sql",
]

SCHEMA_VERSION = 3
"""The version of the tables below. 1 was the unreleased two-table layout
(``signalbus_events`` + ``signalbus_deliveries``, one row per receiver at commit); 2
had no ``event_id`` column on the outbox, no index of its dead rows and no
``signalbus_outbox_changes`` (:func:`upgrade_sql` gives the step from 2)."""

PENDING = "pending"
"""An event not yet settled; a delivery still to be made (first run or retry)."""
DONE = "done"
"""An event whose receivers have all run, or have a delivery row of their own."""
DELIVERED = "delivered"
"""A delivery whose receiver returned without raising."""
DEAD = "dead"
"""Given up: a delivery after :class:`~signalbus.Permanent` or too many attempts, or
whose receiver is unknown; an event whose row cannot be read. ``signalbus retry``
makes it pending again."""

metadata = MetaData()
"""The :class:`~sqlalchemy.MetaData` holding the outbox tables (give it to Alembic)."""

_PENDING_ONLY = text("state = 'pending'")
_SETTLED_ONLY = text("state <> 'pending'")
_DEAD_ONLY = text("state = 'dead'")

# SQLite gives auto-increment ids only to an INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

outbox = Table(
    "signalbus_outbox",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True,
           comment="allocated at commit: the order of one row's events"),
    Column("row_key", String(255), nullable=True,
           comment="model and primary key: events of one row are delivered in order"),
    Column("event_id", String(36), nullable=True,
           comment="the payload's id, written at commit: what a lookup by event id reads"),
    Column("payload", JSON, nullable=False,
           comment="Event.to_dict() without attempt: id, signal, model, op, pk, data..."),
    Column("state", String(8), nullable=False, server_default=PENDING),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("claimed_by", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    # what a worker claims: pending events in commit order, read in index order so that
    # a claim stops after its batch however long the backlog
    Index("ix_signalbus_outbox_pending", "id",
          postgresql_where=_PENDING_ONLY, sqlite_where=_PENDING_ONLY),
    # the per-row order check: an earlier pending event of the same row
    Index("ix_signalbus_outbox_row", "row_key", "id",
          postgresql_where=_PENDING_ONLY, sqlite_where=_PENDING_ONLY),
    # purge, status, replay: settled events by age (no entry until an event is settled,
    # so the commit does not pay for it)
    Index("ix_signalbus_outbox_settled", "settled_at",
          postgresql_where=_SETTLED_ONLY, sqlite_where=_SETTLED_ONLY),
    # the event page, retry/replay --event: a hash index on PostgreSQL (equality is all
    # they ask; smaller and cheaper to write than a btree: docs/outbox-design.md)
    Index("ix_signalbus_outbox_event_id", "event_id", postgresql_using="hash"),
    # the dead list and status: dead rows only (none at commit, a handful in a table of
    # millions, which the settled index would walk through)
    Index("ix_signalbus_outbox_dead", "settled_at", "id",
          postgresql_where=_DEAD_ONLY, sqlite_where=_DEAD_ONLY),
    comment="signalbus outbox: committed events",
)
"""One row per committed event."""

deliveries = Table(
    "signalbus_outbox_deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True,
           comment="the order of one row's deliveries to one receiver"),
    Column("outbox_id", _BigId, ForeignKey("signalbus_outbox.id"), nullable=False),
    Column("event_id", String(36), nullable=False),
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
    UniqueConstraint("outbox_id", "receiver", name="uq_signalbus_outbox_deliveries"),
    Index("ix_signalbus_outbox_deliveries_pending", "id",
          postgresql_where=_PENDING_ONLY, sqlite_where=_PENDING_ONLY),
    Index("ix_signalbus_outbox_deliveries_row", "row_key", "receiver", "id",
          postgresql_where=_PENDING_ONLY, sqlite_where=_PENDING_ONLY),
    Index("ix_signalbus_outbox_deliveries_settled", "state", "updated_at",
          postgresql_where=_SETTLED_ONLY, sqlite_where=_SETTLED_ONLY),
    comment="signalbus outbox: (event, receiver) pairs tracked on their own",
)
"""One row per (event, receiver) that is retried, dead, queued behind a retry, or replayed."""

_Context = JSON().with_variant(postgresql.JSON(), "postgresql")

changes = Table(
    "signalbus_outbox_changes",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True,
           comment="allocated by the trigger: the order of one transaction's statements"),
    Column("txid", BigInteger, nullable=False,
           comment="the writer's transaction id: its changes are coalesced together"),
    Column("source_table", String(255), nullable=False, comment="schema.table"),
    Column("op", String(8), nullable=False),
    Column("context", _Context, nullable=True, comment="the writer's signalbus.context"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_error", Text, nullable=True,
           comment="why these changes could not be turned into events"),
    Index("ix_signalbus_outbox_changes_txid", "txid"),
    comment="signalbus outbox: row changes captured by database triggers",
)
"""One row per statement on a trigger-captured table (its rows are in the table's rows
table), until a worker turns it into events."""

schema_version = Table(
    "signalbus_outbox_schema",
    metadata,
    Column("version", Integer, primary_key=True),
    comment="signalbus outbox: the version of its tables",
)
"""One row: the :data:`SCHEMA_VERSION` the tables were created with."""

_OLD_TABLES = ("signalbus_events", "signalbus_deliveries")


def stamp(connection: Connection) -> None:
    """Record :data:`SCHEMA_VERSION` (in an Alembic migration after creating the tables:
    ``signalbus.outbox.stamp(op.get_bind())``)."""
    connection.execute(schema_version.delete())
    connection.execute(schema_version.insert(), {"version": SCHEMA_VERSION})


def _stamp_after_create(target: Table, connection: Connection, **kw: Any) -> None:
    stamp(connection)


event.listen(schema_version, "after_create", _stamp_after_create)


def create_all(engine: Engine | Connection) -> None:
    """Create the outbox tables (and indexes) that do not exist yet, and record the
    schema version."""
    metadata.create_all(engine)


def drop_all(engine: Engine | Connection) -> None:
    """Drop the outbox tables."""
    metadata.drop_all(engine)


def include_in(target: MetaData) -> None:
    """Copy the outbox tables into ``target`` (the app's metadata), for
    ``db.create_all()`` or an Alembic setup that takes a single ``MetaData``."""
    for table in metadata.sorted_tables:
        if table.name not in target.tables:
            copy = table.to_metadata(target)
            if table is schema_version:
                event.listen(copy, "after_create", _stamp_after_create)


_UPGRADE_FROM_2 = {
    "postgresql": [
        "ALTER TABLE signalbus_outbox ADD COLUMN IF NOT EXISTS event_id VARCHAR(36)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_signalbus_outbox_event_id "
        "ON signalbus_outbox USING hash (event_id)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_signalbus_outbox_dead "
        "ON signalbus_outbox (settled_at, id) WHERE state = 'dead'",
        "UPDATE signalbus_outbox_schema SET version = 3",
        # once no process of the earlier release writes events any more: fill the rows
        # stored without the column, 10,000 at a time (run it until it updates none)
        "UPDATE signalbus_outbox SET event_id = payload->>'id' WHERE id IN "
        "(SELECT id FROM signalbus_outbox WHERE event_id IS NULL LIMIT 10000)",
    ],
    "sqlite": [
        "ALTER TABLE signalbus_outbox ADD COLUMN event_id VARCHAR(36)",
        "CREATE INDEX IF NOT EXISTS ix_signalbus_outbox_event_id "
        "ON signalbus_outbox (event_id)",
        "CREATE INDEX IF NOT EXISTS ix_signalbus_outbox_dead "
        "ON signalbus_outbox (settled_at, id) WHERE state = 'dead'",
        "UPDATE signalbus_outbox_schema SET version = 3",
        "UPDATE signalbus_outbox SET event_id = json_extract(payload, '$.id') "
        "WHERE event_id IS NULL",
    ],
}


def upgrade_sql(dialect: str, from_version: int) -> list[str]:
    """The statements that upgrade the outbox tables from ``from_version`` to
    :data:`SCHEMA_VERSION` on ``dialect`` (``"postgresql"`` or ``"sqlite"``), in order,
    for an operator to run (``psql``, ``sqlite3``, or ``op.execute`` in an Alembic
    migration: on PostgreSQL outside a transaction, for ``CREATE INDEX CONCURRENTLY``).
    The last one fills ``event_id`` of the rows stored before: run it, until it updates
    no row, once no process of the earlier release writes events. docs/outbox-design.md
    ("Schema versions") explains each step."""
    if from_version != 2:
        raise ConfigurationError(
            f"no upgrade step from outbox schema version {from_version} to "
            f"{SCHEMA_VERSION}: only from version 2 (see docs/outbox-design.md, \"Schema "
            "versions\"); with nothing pending, drop_all + create_all.")
    if dialect not in _UPGRADE_FROM_2:
        raise ConfigurationError(
            f"no upgrade statements for the {dialect!r} database, only for "
            f"{' and '.join(sorted(_UPGRADE_FROM_2))}: write the same steps "
            "(docs/outbox-design.md, \"Schema versions\") in its SQL.")
    statements = list(_UPGRADE_FROM_2[dialect])
    # the table trigger capture writes into (new in version 3): before the version row
    at = statements.index("UPDATE signalbus_outbox_schema SET version = 3")
    statements[at:at] = _create_sql(changes, dialect)
    return statements


def _create_sql(table: Table, dialect: str) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` and its indexes, as ``dialect`` writes them."""
    from sqlalchemy.dialects import registry as dialects
    from sqlalchemy.schema import CreateIndex, CreateTable

    d = dialects.load(dialect)()
    out = [str(CreateTable(table, if_not_exists=True).compile(dialect=d)).strip()]
    out += [str(CreateIndex(ix, if_not_exists=True).compile(dialect=d)).strip()
            for ix in sorted(table.indexes, key=lambda ix: str(ix.name))]
    return [" ".join(line.strip() for line in stmt.splitlines()) for stmt in out]


class SchemaMismatch(ConfigurationError):
    """The database's outbox tables are missing, or of another schema version."""


def missing_tables_error() -> SchemaMismatch:
    """The error for a database without the outbox tables (what to run to create them)."""
    return SchemaMismatch(
        "the signalbus outbox tables do not exist in this database. Create them with "
        "signalbus.outbox.create_all(engine), or add signalbus.outbox.metadata to your "
        "Alembic target_metadata, run a migration and call "
        "signalbus.outbox.stamp(op.get_bind()) in it."
    )


def check(connection: Connection) -> None:
    """Raise :class:`SchemaMismatch` unless the outbox tables exist at
    :data:`SCHEMA_VERSION`; the message names the step that fixes it."""
    insp = inspect(connection)
    names = set(insp.get_table_names())
    if schema_version.name not in names:
        old = [name for name in _OLD_TABLES if name in names]
        if old:
            raise SchemaMismatch(
                f"this database has the outbox tables of an unreleased signalbus "
                f"({', '.join(old)}; schema version 1) and this signalbus needs schema "
                f"version {SCHEMA_VERSION}. Upgrade step: deliver what is pending with the "
                "old worker, drop those tables, then run signalbus.outbox.create_all(engine)."
            )
        raise missing_tables_error()
    found = connection.execute(select(schema_version.c.version)).scalars().all()
    if found != [SCHEMA_VERSION]:
        have = ", ".join(map(str, found)) or "none recorded"
        if found and max(found) > SCHEMA_VERSION:
            step = ("upgrade signalbus in this process (pip install -U sqlalchemy-signalbus) "
                    "to the release that wrote it")
        elif found == [2]:
            step = ("run the statements of signalbus.outbox.schema.upgrade_sql("
                    f"{connection.dialect.name!r}, 2) (docs/outbox-design.md, \"Schema "
                    "versions\", version 2 -> 3: an event_id column and two indexes, "
                    "built with CREATE INDEX CONCURRENTLY on PostgreSQL), or, with nothing "
                    "pending, drop_all + create_all")
        else:
            step = ("run the upgrade in docs/outbox-design.md (\"Schema versions\") for "
                    f"version {have} -> {SCHEMA_VERSION}, or, with nothing pending, "
                    "drop_all + create_all")
            if not found:
                step = ("record it with signalbus.outbox.stamp(connection) if the tables were "
                        "created by a migration of this release")
        raise SchemaMismatch(
            f"the signalbus outbox in this database has schema version {have}; this "
            f"signalbus needs version {SCHEMA_VERSION}. Upgrade step: {step}."
        )
    missing = [t.name for t in (outbox, deliveries, changes) if t.name not in names]
    if missing:
        raise missing_tables_error()
