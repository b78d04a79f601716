"""Row changes captured by database triggers become outbox events.

The triggers of ``bind(..., capture="trigger")`` tables (:mod:`signalbus.capture.triggers`)
write one ``signalbus_outbox_changes`` row per statement, in the writer's transaction. A
worker (or the Celery relay, or ``signalbus_drain``) calls :meth:`Converter.run` before
each claim; in one transaction it:

1. takes the converter's advisory lock (``pg_try_advisory_xact_lock``): one converter at a
   time, the others go on delivering;
2. reads the change rows of the oldest transactions (every statement of a writer's
   transaction is read together: its changes coalesce);
3. reads their rows from the tables' rows tables (the table's own column types) through
   the model's SQLAlchemy column types, so a value is the Python value the ORM would have
   loaded (a ``numeric`` a ``Decimal``, a ``timestamptz`` an aware ``datetime``, an enum
   column the enum), then normalised by the same rules as ORM capture;
4. pairs the old and new rows of each statement by primary key, coalesces the changes of
   each transaction with the same rules as ORM capture (:mod:`signalbus.capture.frames`),
   builds the events of the bindings (:mod:`signalbus.capture.build`, ``source="trigger"``,
   ``context`` from the writer's ``signalbus.context`` setting), stores them in the outbox
   and deletes the change rows.

A change row that cannot be turned into events (its table is no longer bound in this app,
a column the model maps no longer exists, a value that is not JSON) keeps its error in
``last_error``; the rest go on. ``signalbus status`` counts such rows and
``signalbus triggers retry`` makes them eligible again once the cause is fixed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper

from ..capture.build import Ids, row_events
from ..capture.frames import Frame, RowChange, same
from ..capture.plans import plans
from ..capture.snapshots import normalised
from ..capture.triggers import (
    TriggerTable,
    install,
    quote,
    tables,
    trigger_bindings,
    uninstall,
)
from ..errors import SignalBusError, UnserialisableValue
from ..events import EMPTY, FrozenDict, Outgoing, freeze
from ..redaction import redact
from . import sql
from .schema import changes
from .settings import OutboxSettings, engine_of

if TYPE_CHECKING:
    from ..runtime import Runtime
    from .store import Outbox

__all__ = ["Converter", "install_triggers", "trigger_tables", "uninstall_triggers"]

log = logging.getLogger("signalbus.outbox")

LIMIT = 500
"""Change rows (statements) read per conversion, rounded up to whole transactions."""


def trigger_tables(runtime: Runtime, conn: Connection) -> list[TriggerTable]:
    """The trigger-captured tables of ``runtime``'s app on the database of ``conn``."""
    settings = OutboxSettings.from_config(runtime.config)
    return tables(runtime.redact,
                  default_schema=conn.dialect.default_schema_name or "public",
                  changes_table=changes_table(conn), channel=settings.channel)


def install_triggers(runtime: Runtime, engine: Engine | None = None) -> list[str]:
    """Install (or replace) the capture triggers of ``runtime``'s ``capture="trigger"``
    models (``runtime``: ``bus.runtime(app)``, or ``bus.runtime()`` for plain SQLAlchemy);
    the ``schema.table`` names. In production, prefer a migration with the DDL of
    ``signalbus triggers sql``."""
    with (engine or engine_of(runtime)).begin() as conn:
        found = trigger_tables(runtime, conn)
        install(conn, found)
    return [t.key for t in found]


def uninstall_triggers(runtime: Runtime, engine: Engine | None = None, *,
                       discard: bool = False) -> list[str]:
    """Remove every signalbus capture trigger of the database (bound tables and tables no
    binding claims any more); the ``schema.table`` names whose triggers were there.

    Refused while captured changes wait to be turned into events, unless ``discard``.
    """
    with (engine or engine_of(runtime)).begin() as conn:
        return uninstall(conn, trigger_tables(runtime, conn),
                         changes_table=changes_table(conn), discard=discard)


def changes_table(conn: Connection) -> str:
    """The outbox changes table, schema-qualified and quoted, on ``conn``'s database."""
    default_schema = conn.dialect.default_schema_name or "public"
    return f"{quote(changes.schema or default_schema)}.{quote(changes.name)}"


class _Failed(SignalBusError):
    """Change rows that cannot be turned into events (the message says why)."""


@dataclasses.dataclass
class _Statement:
    id: int
    txid: int
    table: str
    op: str
    created_at: dt.datetime
    context: Any
    old: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    new: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)


class Converter:
    """Turns the change rows of trigger-captured tables into the events of one runtime."""

    def __init__(self, runtime: Runtime, backend: Outbox) -> None:
        self.runtime = runtime
        self.backend = backend
        self._tables: dict[str, TriggerTable] | None = None
        self._version = -1

    @property
    def active(self) -> bool:
        """Whether the app has ``capture="trigger"`` bindings at all."""
        return bool(trigger_bindings())

    def tables(self, conn: Connection) -> dict[str, TriggerTable]:
        from ..bindings import registry

        if self._tables is None or self._version != registry.version:
            self._tables = {t.key: t for t in trigger_tables(self.runtime, conn)}
            self._version = registry.version
        return self._tables

    def run(self, conn: Connection, limit: int = LIMIT) -> int:
        """Convert the oldest captured transactions inside ``conn``'s transaction; the
        number of change rows turned into events (0: nothing to do, or another converter
        holds the lock)."""
        if conn.dialect.name != "postgresql" or not sql.try_lock_changes(conn):
            return 0
        heads = sql.take_changes(conn, limit)
        if not heads:
            return 0
        found = self.tables(conn)
        statements = [_Statement(r.id, r.txid, r.source_table, r.op, r.created_at, r.context)
                      for r in heads]
        by_id = {s.id: s for s in statements}
        failed: dict[int, str] = {}
        for table_key in sorted({s.table for s in statements}):
            ids = [s.id for s in statements if s.table == table_key]
            t = found.get(table_key)
            if t is None:
                for i in ids:
                    failed[i] = (
                        f"no bind(..., capture='trigger') of this app captures table "
                        f"{table_key}: import the module that binds it in the worker's app, "
                        "or remove the table's triggers with 'signalbus triggers uninstall'"
                    )
                continue
            try:
                with conn.begin_nested():
                    rows = sql.changed_rows(conn, t, ids)
            except sa_exc.DBAPIError as exc:
                message = redact(str(exc.orig).strip().splitlines()[0])
                for i in ids:
                    failed[i] = (f"reading the rows captured from {table_key} failed: "
                                 f"{message}. Check that the model matches the table "
                                 "(a migration not run?)")
                continue
            for row in rows:
                statement = by_id[row[0]]
                values: tuple[Any, ...] = tuple(row)
                (statement.new if values[1] else statement.old).append(values[2:])
        out: list[Outgoing] = []
        done: list[int] = []
        for txid_statements in _by_transaction(statements, failed):
            try:
                out.extend(self._events(txid_statements, found))
            except _Failed as exc:
                for s in txid_statements:
                    failed[s.id] = str(exc)
                continue
            done.extend(s.id for s in txid_statements)
        if out:
            self.backend.store(conn, out)
        if done:
            for table_key in sorted({by_id[i].table for i in done}):
                sql.delete_changed_rows(conn, found[table_key],
                                        [i for i in done if by_id[i].table == table_key])
            sql.delete_changes(conn, done)
        for change_id, error in failed.items():
            log.error("signalbus: captured change %d of %s kept: %s", change_id,
                      by_id[change_id].table, error)
        if failed:
            sql.fail_changes(conn, failed)
        return len(done)

    def _events(self, statements: Sequence[_Statement],
                found: dict[str, TriggerTable]) -> list[Outgoing]:
        """The events of one writer transaction's statements."""
        frame = Frame(None)
        for s in statements:
            for change in self._row_changes(s, found[s.table]):
                frame.add(change)
        redact_ = self.runtime.redact
        out: list[Outgoing] = []
        ids = Ids(len(frame))
        for entry in frame.entries:
            if not isinstance(entry, RowChange):
                continue
            bindings = plans.trigger(entry.cls, redact_).by_op.get(entry.op)
            if bindings:
                row_events(entry, bindings, ids, out)
        return out

    def _row_changes(self, s: _Statement, t: TriggerTable) -> list[RowChange]:
        mapper: Mapper[Any] = sa_inspect(t.cls)
        keys = [k for _c, k in t.columns]
        hidden = [k for _c, k in t.hidden]
        pk_at = [keys.index(k) for k in t.pk]
        root = mapper.base_mapper.class_
        occurred = s.created_at.astimezone(dt.UTC)
        context = _context(s.context)

        def split(values: tuple[Any, ...]) -> tuple[type[Any], dict[str, Any], dict[str, Any]]:
            row = dict(zip(keys, values[:len(keys)], strict=True))
            digests = dict(zip(hidden, values[len(keys):], strict=True))
            cls = t.cls
            if t.discriminator is not None:
                sub = mapper.polymorphic_map.get(row[t.discriminator])
                if sub is not None:
                    cls = sub.class_
            return cls, row, digests

        def pk_of(values: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(values[i] for i in pk_at)

        olds = {pk_of(v): v for v in s.old}
        out: list[RowChange] = []
        if s.op == "update":
            news = {pk_of(v): v for v in s.new}
            for pk, values in news.items():
                before = olds.pop(pk, None)
                cls, row, digests = split(values)
                if before is None:  # its key was changed by the statement: a new row
                    out.append(self._change(cls, root, "insert", pk, {**row, **digests}, {},
                                            occurred, context))
                    continue
                _cls, old_row, old_digests = split(before)
                old = {k: v for k, v in old_row.items() if not same(v, row[k])}
                for k, digest in digests.items():
                    # a redacted column stored as a digest: its change is known, its value
                    # never (the digests stand in for the values, and are never shown)
                    if digest != old_digests.get(k):
                        old[k] = old_digests.get(k)
                out.append(self._change(cls, root, "update", pk, {**row, **digests}, old,
                                        occurred, context))
            for pk, values in olds.items():  # a key the statement changed: the old row
                cls, row, digests = split(values)
                out.append(self._change(cls, root, "delete", pk, {**row, **digests}, {},
                                        occurred, context))
        elif s.op == "insert":
            for values in s.new:
                cls, row, digests = split(values)
                out.append(self._change(cls, root, "insert", pk_of(values), {**row, **digests},
                                        {}, occurred, context))
        else:
            for values in s.old:
                cls, row, digests = split(values)
                out.append(self._change(cls, root, "delete", pk_of(values), {**row, **digests},
                                        {}, occurred, context))
        return out

    def _change(self, cls: type[Any], root: type[Any], op: str, pk: tuple[Any, ...],
                row: dict[str, Any], old: dict[str, Any], occurred: dt.datetime,
                context: FrozenDict) -> RowChange:
        plan = plans.trigger(cls, self.runtime.redact)
        try:
            data = normalised(cls, plan, row)
        except UnserialisableValue as exc:
            raise _Failed(str(exc)) from None
        if op == "delete":
            raw = row  # every stored column: a delete and re-insert becomes an update
        else:
            raw = {k: row[k] for k in plan.raw if k in row}
            for k in old:
                raw[k] = row.get(k)
        key = (root, pk)
        return RowChange(cls, key, key, op, pk, data, raw, old, occurred, frozenset(),
                         "trigger", context)


def _by_transaction(statements: Sequence[_Statement],
                    failed: dict[int, str]) -> list[list[_Statement]]:
    """The statements grouped by writer transaction, in the order of their first
    statement; a transaction with a failed statement is kept whole."""
    groups: dict[int, list[_Statement]] = {}
    for s in statements:
        groups.setdefault(s.txid, []).append(s)
    out = []
    for group in groups.values():
        if any(s.id in failed for s in group):
            for s in group:
                failed.setdefault(s.id, "another statement of its transaction could not be "
                                        "read (see that one's error)")
            continue
        out.append(group)
    return out


def _context(value: Any) -> FrozenDict:
    """``event.context`` from the writer's ``signalbus.context`` setting (a JSON object);
    anything else set there is ignored (with a warning: a typo must not stop delivery)."""
    if value is None:
        return EMPTY
    if isinstance(value, dict):
        frozen = freeze(value)
        assert isinstance(frozen, FrozenDict)
        return frozen
    log.warning("signalbus: the signalbus.context setting of a captured change is not a JSON "
                "object (%s); the event carries an empty context", type(value).__name__)
    return EMPTY
