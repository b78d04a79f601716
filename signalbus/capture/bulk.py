"""Bulk capture: ORM statements run through ``session.execute`` become row changes.

``session.execute(insert(User), [...])``, ``update(User).where(...).values(...)``,
``delete(User).where(...)`` and ORM bulk UPDATE by primary key
(``session.execute(update(User), [{"id": 1, ...}, ...])``) change rows without a flush.
The session's ``do_orm_execute`` hook hands them here; for a class with commit-phase
bindings, not muted:

1. pending ORM changes are flushed first (the statement's own autoflush, run early), so
   that their events come first and the old values read next are the flushed ones;
2. updates and deletes read the affected rows (every column attribute) with the
   statement's own WHERE criteria (``FOR UPDATE`` on PostgreSQL, so no other
   transaction changes them in between), or by the primary keys of the parameter sets
   for a bulk UPDATE by primary key;
3. the statement runs, unchanged for the caller;
4. updates read the new values by primary key; inserts get theirs from ``RETURNING``
   (server defaults and generated keys included), added to the statement; the caller
   still gets the result it asked for (its own ``RETURNING`` columns, or none);
5. each row's change goes into the frame of the innermost transaction as a
   :class:`~signalbus.capture.frames.RowChange` with ``source="bulk"``, where it
   coalesces with the ORM's changes of the row like any other change.

A statement on a class without bindings (or all of whose signals are muted) costs one
plan lookup: no extra statement runs. Core statements (``connection.execute``, or
``session.execute`` of a statement on a ``Table``) never reach this hook: they stay
invisible (trigger capture sees them).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Result
from sqlalchemy.engine.result import null_result
from sqlalchemy.orm import Mapper, ORMExecuteState, Session

from .. import muting
from ..contexts import current_context
from ..events import FrozenDict
from .frames import Frame, RowChange, same
from .plans import Plan, plans
from .snapshots import normalised

__all__ = ["BulkHost", "execute"]

log = logging.getLogger("signalbus")

CHUNK = 500
"""Primary keys per ``IN (...)`` read: well below every driver's parameter limit."""

_NOTHING: dict[str, Any] = {}


class BulkHost(Protocol):
    """What the session listeners give bulk capture (the tracker of the session)."""

    def bulk_sink(self, session: Session) -> Any:
        """The sink of ``session``'s transaction (``redact``, ``muted``), or ``None``."""

    def bulk_frame(self, session: Session, sink: Any) -> Frame:
        """The frame of ``session``'s innermost real transaction (begun by now)."""


def _muted_for(plan: Plan, names: frozenset[str]) -> frozenset[str] | None:
    if not names:
        return frozenset()
    hits = frozenset(s for s in plan.signals if muting.is_muted(s, names))
    return None if len(hits) == len(plan.signals) else hits


def execute(orm_state: ORMExecuteState, host: BulkHost) -> Result[Any] | None:
    """The ``do_orm_execute`` hook: capture an ORM DML statement's row changes.

    Returns ``None`` (the statement runs as usual) when there is nothing to capture, else
    the statement's result, run here.
    """
    mapper = orm_state.bind_mapper
    if mapper is None:
        return None  # a Core table statement run through the session: invisible
    session = orm_state.session
    sink = host.bulk_sink(session)
    if sink is None:
        return None
    cls = mapper.class_
    plan = plans.commit(cls, sink.redact)
    if not plan.bound:
        return None  # the common case: no binding, no extra statement
    # plans.commit() covers capture="orm" bindings only: a table captured by triggers
    # (capture="trigger") has its bulk statements seen by its triggers, exactly once
    muted = _muted_for(plan, muting.active(sink.muted))
    if muted is None:
        return None
    if _autoflush(orm_state):
        session._autoflush()
    now = dt.datetime.now(dt.UTC)
    context = current_context()
    run = _Run(orm_state, mapper, plan, now, muted, context)
    if orm_state.is_insert:
        result, changes = run.insert()
    elif orm_state.is_update:
        result, changes = run.update()
    elif orm_state.is_delete:
        result, changes = run.delete()
    else:  # pragma: no cover - the listener only calls for DML
        return None
    if changes:
        frame = host.bulk_frame(session, sink)
        for rc in changes:
            frame.add(rc)
    return result


def _autoflush(orm_state: ORMExecuteState) -> bool:
    options = orm_state.execution_options
    if orm_state.is_insert:
        insert_options = options.get("_sa_orm_insert_options")
        return bool(getattr(insert_options, "_autoflush", True))
    update_options = options.get("_sa_orm_update_options")
    return bool(getattr(update_options, "_autoflush", True))


class _Run:
    """One captured statement."""

    def __init__(self, orm_state: ORMExecuteState, mapper: Mapper[Any], plan: Plan,
                 now: dt.datetime, muted: frozenset[str], context: FrozenDict) -> None:
        self.state = orm_state
        self.session = orm_state.session
        self.mapper = mapper
        self.cls = mapper.class_
        self.plan = plan
        self.now = now
        self.muted = muted
        self.context = context
        self.keys = tuple(prop.key for prop in mapper.column_attrs)
        self.attrs = [getattr(self.cls, k) for k in self.keys]
        self.pk_attrs = [getattr(self.cls, k) for k in plan.pk_keys]
        self.pk_index = [self.keys.index(k) for k in plan.pk_keys]
        self.columns = [prop.columns[0] for prop in mapper.column_attrs]
        self.pk_columns = [self.columns[i] for i in self.pk_index]
        self.dialect = self.session.get_bind(mapper=mapper).dialect

    # -- reading rows ---------------------------------------------------------------

    def _rows(self, rows: Iterable[Sequence[Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
        keys = self.keys
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        if len(self.pk_index) == 1:
            (i,) = self.pk_index
            for row in rows:
                out[(row[i],)] = dict(zip(keys, row, strict=True))
            return out
        index = self.pk_index
        for row in rows:
            out[tuple(row[i] for i in index)] = dict(zip(keys, row, strict=True))
        return out

    def _select(self, lock: bool) -> Any:
        # a Core SELECT of the mapped columns on the session's connection: the ORM's
        # row loading would cost more than the statement being captured
        query = select(*self.columns)
        criterion = self.mapper._single_table_criterion  # single-table inheritance
        if criterion is not None:
            query = query.where(criterion)
        if lock and self.dialect.name == "postgresql":
            query = query.with_for_update(of=self.mapper.local_table)
        return query

    def _read(self, query: Any, params: Any = None) -> dict[tuple[Any, ...], dict[str, Any]]:
        connection = self.session.connection(bind_arguments={"mapper": self.mapper})
        return self._rows(connection.execute(query, params))

    def _by_where(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The rows the statement's WHERE criteria select, before it runs."""
        query = self._select(lock=True)
        where = self.state.statement.whereclause  # type: ignore[attr-defined]
        if where is not None:
            query = query.where(where)
        # one parameter set: the values of the statement's bindparam()s, if any (the
        # SELECT ignores the others, the SET values)
        params = self.state.parameters
        return self._read(query.order_by(*self.pk_columns),
                          params if isinstance(params, dict) else None)

    def _by_pk(self, pks: Sequence[tuple[Any, ...]], lock: bool,
               where: Any = None) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The rows of these primary keys (and ``where``), in chunks."""
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        for i in range(0, len(pks), CHUNK):
            chunk = pks[i:i + CHUNK]
            query = self._select(lock)
            if len(self.pk_columns) == 1:
                query = query.where(self.pk_columns[0].in_([pk[0] for pk in chunk]))
            else:
                query = query.where(tuple_(*self.pk_columns).in_(chunk))
            if where is not None:
                query = query.where(where)
            out.update(self._read(query))
        return out

    # -- the statements -------------------------------------------------------------

    def update(self) -> tuple[Result[Any], list[RowChange]]:
        params = self.state.parameters
        where = self.state.statement.whereclause  # type: ignore[attr-defined]
        if isinstance(params, list):
            # ORM bulk UPDATE by primary key: the keys are in the parameter sets
            mapper = self.mapper
            names = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
            wanted = list(dict.fromkeys(tuple(p.get(n) for n in names) for p in params))
            found = self._by_pk(wanted, lock=True, where=where)
            # events in the order of the parameter sets
            before = {pk: found[pk] for pk in wanted if pk in found}
        else:
            before = self._by_where()
        result = self.state.invoke_statement()
        after = self._by_pk(list(before), lock=False)
        changes = []
        for pk, old_row in before.items():
            new_row = after.get(pk)
            if new_row is None:
                continue  # its primary key changed, or a trigger removed it
            rc = self._update(old_row, new_row)
            if rc is not None:
                changes.append(rc)
        if len(after) < len(before):
            log.warning(
                "signalbus: a bulk UPDATE of %s changed the primary key of %d row(s); "
                "their events are not sent (bulk capture follows rows by primary key). "
                "Change primary keys through the ORM (session.flush) instead.",
                self.cls.__qualname__, len(before) - len(after))
        return result, changes

    def delete(self) -> tuple[Result[Any], list[RowChange]]:
        before = self._by_where()
        result = self.state.invoke_statement()
        changes = [self._change("delete", row, row, {}) for row in before.values()]
        return result, changes

    def insert(self) -> tuple[Result[Any], list[RowChange]]:
        statement: Any = self.state.statement
        params = self.state.parameters
        returning = statement._returning
        post = getattr(statement, "_post_values_clause", None)
        if post is not None and type(post).__name__ == "OnConflictDoUpdate":
            # RETURNING gives inserted and updated rows alike: their events cannot be
            # told apart (ON CONFLICT DO NOTHING returns only inserted rows: captured)
            log.warning(
                "signalbus: an INSERT … ON CONFLICT DO UPDATE of %s sends no events (bulk "
                "capture cannot tell inserted rows from updated ones). Use "
                "capture=\"trigger\" for the table on PostgreSQL, or write the rows "
                "through the ORM (session.merge).", self.cls.__qualname__)
            return self.state.invoke_statement(), []
        if params is None and not returning and post is None and statement._values and \
                not statement._multi_values:
            # insert(User).values(...): one row, its key from the cursor
            result: Any = self.state.invoke_statement()
            pk = tuple(result.inserted_primary_key)
            rows = self._by_pk([pk], lock=False)
            return result, [self._change("insert", row, row, {}) for row in rows.values()]
        if not (self.dialect.insert_returning and
                (not isinstance(params, list) or self.dialect.insert_executemany_returning)):
            log.warning(
                "signalbus: the database of %s cannot return inserted rows (INSERT … "
                "RETURNING: SQLite 3.35 or later, PostgreSQL), so this bulk INSERT sends "
                "no events. Add the objects with session.add_all() instead.",
                self.cls.__qualname__)
            return self.state.invoke_statement(), []
        sort = isinstance(params, list)
        extended = statement.returning(*self.attrs, sort_by_parameter_order=sort)
        frozen = self.state.invoke_statement(statement=extended).freeze()
        ours = len(self.attrs)
        returned = frozen().all()
        changes = [self._change("insert", row, row, {})
                   for row in self._rows(tuple(r)[-ours:] for r in returned).values()]
        if returning:
            width = len(frozen().keys()) - ours
            # the caller's RETURNING columns only, as they asked
            return frozen().columns(*range(width)), changes
        caller = null_result()
        caller.close()  # returns no rows, like an INSERT without RETURNING
        return caller, changes

    # -- row changes ----------------------------------------------------------------

    def _update(self, old_row: dict[str, Any], new_row: dict[str, Any]) -> RowChange | None:
        try:
            old = {k: v for k, v in old_row.items() if v != new_row[k]}
        except Exception:  # a type whose != is not a bool (arrays)
            old = {k: v for k, v in old_row.items() if not same(v, new_row[k])}
        if not old:
            return None  # the statement set the values the row had
        return self._change("update", new_row, new_row, old)

    def _change(self, op: str, row: dict[str, Any], values: dict[str, Any],
                old: dict[str, Any]) -> RowChange:
        plan = self.plan
        data = normalised(self.cls, plan, values)
        pk = tuple(row[k] for k in plan.pk_keys)
        key = (plan.root, pk)
        if op == "delete":
            raw = dict(row)  # every column, as for an ORM delete
        elif plan.raw or old:
            raw = {k: row[k] for k in plan.raw}
            for k in old:
                raw[k] = row[k]
        else:
            raw = _NOTHING
        return RowChange(self.cls, key, key, op, pk, data, raw, old, self.now, self.muted,
                         "bulk", self.context)
