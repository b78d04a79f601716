"""Trigger capture (PostgreSQL): the database captures a table's changes, whoever makes them.

A model bound with ``bind(..., capture="trigger")`` gets three statement-level triggers
(``AFTER INSERT``/``UPDATE``/``DELETE ... REFERENCING ... TABLE ... FOR EACH STATEMENT``),
one PL/pgSQL function and one **rows table** (``signalbus_rows_<table>``, next to the
table, with the captured columns in the table's own types), generated here from its
bindings. Each statement that changes rows, inside the writer's transaction, writes one
header row into ``signalbus_outbox_changes`` (transaction id, table, op, the writer's
``signalbus.context`` setting) and copies the captured columns of the transition tables
into the rows table with one ``INSERT ... SELECT`` per side (old, new), then sends a
``NOTIFY`` on the outbox channel. A worker turns them into events
(:mod:`signalbus.outbox.changes`).

Why this shape (``python -m benchmarks.trigger_shapes``, side by side against a table
without a trigger): a row-level trigger runs its function and writes one row per changed
row (6.6× the floor for a 10,000-row ``UPDATE``); a statement-level trigger aggregating
the rows into one JSON value per statement pays for building the JSON (2.6×, ``jsonb``
6.2×); copying the transition tables into a typed table of the same columns is a plain
heap insert (1.45×), and the worker reads the values back already typed.

Only the columns the bindings need are stored: the payload columns, the columns that
``when=`` conditions read, the primary key and the polymorphic discriminator. A redacted
column that only decides whether an update binding fires is stored as an ``md5`` digest
(under ``"~name"``), never as its value.

The generated DDL is idempotent (``CREATE TABLE IF NOT EXISTS``, ``CREATE OR REPLACE
FUNCTION``, ``DROP TRIGGER IF EXISTS`` then ``CREATE TRIGGER``) and versioned: the
function's and the rows table's comments record :data:`VERSION` and a fingerprint of the
definition, which :func:`status` compares with the bindings to report drift. A rows table
of another definition is replaced only while it is empty: the DDL refuses (and names the
fix) rather than drop captured changes a worker has not turned into events yet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Table, func, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper, Session

from ..bindings import Binding, qualified_name, registry
from ..contexts import current_context
from ..errors import BindingError
from .plans import Plan, plans, redacted

__all__ = [
    "VERSION",
    "ContextSharing",
    "share_context",
    "TriggerStatus",
    "TriggerTable",
    "install",
    "install_sql",
    "status",
    "tables",
    "uninstall",
    "uninstall_sql",
]

VERSION = 1
"""The version of the generated trigger definitions (part of every fingerprint)."""

TRIGGER_PREFIX = "signalbus_capture"
"""Names of the generated triggers (``signalbus_capture_insert`` ...) and functions."""
ROWS_PREFIX = "signalbus_rows"
"""Names of the generated rows tables (``signalbus_rows_<table>``)."""
COMMENT_PREFIX = "signalbus trigger capture"
CONTEXT_SETTING = "signalbus.context"
"""The transaction setting the triggers read ``event.context`` from (JSON text): set by
signalbus for ORM writes inside :func:`signalbus.context`, and by anyone else with
``SET LOCAL signalbus.context = '{"actor": "cron"}'``."""

_OPS = (("insert", "INSERT", "NEW TABLE AS signalbus_new"),
        ("update", "UPDATE", "OLD TABLE AS signalbus_old NEW TABLE AS signalbus_new"),
        ("delete", "DELETE", "OLD TABLE AS signalbus_old"))


def quote(name: str) -> str:
    """A PostgreSQL identifier, always quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A PostgreSQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclasses.dataclass(frozen=True)
class TriggerTable:
    """One trigger-captured table: what its triggers store and where."""

    cls: type[Any]
    """The mapped class the table belongs to (the root of a single-table hierarchy)."""
    schema: str
    name: str
    columns: tuple[tuple[str, str], ...]
    """``(column name, attribute key)`` of the columns stored as values."""
    hidden: tuple[tuple[str, str], ...]
    """``(column name, attribute key)`` of redacted columns stored as ``md5`` digests."""
    pk: tuple[str, ...]
    """The primary key's attribute keys."""
    discriminator: str | None
    """The attribute key of the polymorphic discriminator, if the hierarchy has one."""
    changes_table: str
    """The outbox changes table, schema-qualified and quoted."""
    channel: str

    @property
    def key(self) -> str:
        """``schema.table``: the ``source_table`` the triggers write."""
        return f"{self.schema}.{self.name}"

    @property
    def qualified(self) -> str:
        return f"{quote(self.schema)}.{quote(self.name)}"

    @property
    def function(self) -> str:
        """The trigger function's name (unquoted, at most 63 characters)."""
        return _name(TRIGGER_PREFIX, self.name)

    @property
    def qualified_function(self) -> str:
        return f"{quote(self.schema)}.{quote(self.function)}"

    @property
    def rows_table(self) -> str:
        """The rows table's name (unquoted)."""
        return _name(ROWS_PREFIX, self.name)

    @property
    def qualified_rows(self) -> str:
        return f"{quote(self.schema)}.{quote(self.rows_table)}"

    def table(self) -> Table:
        """The SQLAlchemy table (for typed reads of stored rows)."""
        mapper: Mapper[Any] = sa_inspect(self.cls)
        table = mapper.local_table
        assert isinstance(table, Table)
        return table

    def stored_columns(self) -> list[Column[Any]]:
        """The SQLAlchemy columns stored as values, in :attr:`columns` order."""
        table = self.table()
        return [table.c[name] for name, _key in self.columns]

    def _select(self, alias: str) -> str:
        parts = [f"{alias}.{quote(c)}" for c, _k in self.columns]
        parts += [f"md5({alias}.{quote(c)}::text)" for c, _k in self.hidden]
        return ", ".join(parts)

    @property
    def stored(self) -> list[str]:
        """The rows table's columns after ``change_id`` and ``side``, in order."""
        return [c for c, _k in self.columns] + [f"~{c}" for c, _k in self.hidden]

    def function_body(self) -> str:
        """The ``CREATE OR REPLACE FUNCTION`` statement."""
        ctx = f"nullif(current_setting({literal(CONTEXT_SETTING)}, true), '')::json"
        columns = ", ".join(quote(c) for c in ["change_id", "side", *self.stored])

        def header(op: str) -> str:
            return (f"INSERT INTO {self.changes_table} (txid, source_table, op, context, "
                    f"created_at)\n      VALUES (txid_current(), {literal(self.key)}, "
                    f"{literal(op)}, {ctx}, statement_timestamp()) RETURNING id INTO change;")

        def copy(side: int, table: str, alias: str) -> str:
            return (f"INSERT INTO {self.qualified_rows} ({columns})\n      SELECT change, "
                    f"{side}, {self._select(alias)} FROM {table} {alias};")

        # SECURITY DEFINER: a writer needs no privilege on signalbus's tables (the
        # function writes them as the role that installed it); every name it uses is
        # qualified, and its search_path is fixed so that no writer can redirect one
        return f"""CREATE OR REPLACE FUNCTION {self.qualified_function}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $signalbus$
DECLARE
  change bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NOT EXISTS (SELECT 1 FROM signalbus_new) THEN RETURN NULL; END IF;
    {header('insert')}
    {copy(1, 'signalbus_new', 'n')}
  ELSIF TG_OP = 'UPDATE' THEN
    IF NOT EXISTS (SELECT 1 FROM signalbus_new) THEN RETURN NULL; END IF;
    {header('update')}
    {copy(0, 'signalbus_old', 'o')}
    {copy(1, 'signalbus_new', 'n')}
  ELSE
    IF NOT EXISTS (SELECT 1 FROM signalbus_old) THEN RETURN NULL; END IF;
    {header('delete')}
    {copy(0, 'signalbus_old', 'o')}
  END IF;
  PERFORM pg_notify({literal(self.channel)}, '');
  RETURN NULL;
END
$signalbus$"""

    def rows_sql(self) -> list[str]:
        """Create the rows table (the table's own column types) unless it exists with
        this definition; replace one of another definition only while it is empty."""
        rows = self.qualified_rows
        select = ", ".join(["NULL::bigint AS change_id", "NULL::smallint AS side",
                            *(f"t.{quote(c)}" for c, _k in self.columns),
                            *(f"md5(t.{quote(c)}::text) AS {quote('~' + c)}"
                              for c, _k in self.hidden)])
        guard = f"""DO $signalbus$
BEGIN
  IF to_regclass({literal(rows)}) IS NOT NULL
     AND obj_description(to_regclass({literal(rows)}), 'pg_class')
         IS DISTINCT FROM {literal(self.comment)} THEN
    IF EXISTS (SELECT 1 FROM {rows}) THEN
      RAISE EXCEPTION {literal(_WAITING + ", and its definition changes")},
        {literal(rows)}, {literal(self.key)}
        USING HINT = {literal(_RUN_WORKER + ", then install again.")};
    END IF;
    DROP TABLE {rows};
  END IF;
END
$signalbus$"""
        return [guard,
                f"CREATE TABLE IF NOT EXISTS {rows} AS SELECT {select} FROM {self.qualified} t "
                "WITH NO DATA",
                f"COMMENT ON TABLE {rows} IS {literal(self.comment)}"]

    @property
    def fingerprint(self) -> str:
        """A digest of the definition: differs whenever the generated DDL would."""
        body = f"v{VERSION}\n{self.function_body()}\n{self.stored}"
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    @property
    def comment(self) -> str:
        return f"{COMMENT_PREFIX} v{VERSION} {self.key} {self.fingerprint}"

    def install_sql(self) -> list[str]:
        """The statements that install (or replace) this table's capture."""
        out = [*self.rows_sql(), self.function_body(),
               f"COMMENT ON FUNCTION {self.qualified_function}() IS {literal(self.comment)}"]
        for op, event, referencing in _OPS:
            trigger = quote(f"{TRIGGER_PREFIX}_{op}")
            out.append(f"DROP TRIGGER IF EXISTS {trigger} ON {self.qualified}")
            out.append(f"CREATE TRIGGER {trigger} AFTER {event} ON {self.qualified} "
                       f"REFERENCING {referencing} FOR EACH STATEMENT "
                       f"EXECUTE FUNCTION {self.qualified_function}()")
        return out

    def uninstall_sql(self) -> list[str]:
        """The statements that remove this table's capture (refused while captured
        changes wait in its rows table)."""
        return _drop_sql(self.qualified, self.qualified_function, self.qualified_rows,
                         self.key)


_WAITING = ("signalbus: % holds captured changes of % that no worker has turned into events "
            "yet")
_RUN_WORKER = 'Run the worker until "signalbus triggers status" shows no change waiting'
_OR_DISCARD = ', or discard them with "signalbus triggers uninstall --discard".'


def _name(prefix: str, table: str) -> str:
    """``prefix_table``, at most 63 characters (a digest replaces the end of long names)."""
    name = f"{prefix}_{table}"
    if len(name) > 63:
        digest = hashlib.sha256(table.encode()).hexdigest()[:10]
        name = f"{name[:52]}_{digest}"
    return name


def _drop_sql(table: str | None, function: str, rows: str, key: str) -> list[str]:
    out = [f"""DO $signalbus$
BEGIN
  IF to_regclass({literal(rows)}) IS NOT NULL THEN
    IF EXISTS (SELECT 1 FROM {rows}) THEN
      RAISE EXCEPTION {literal(_WAITING)}, {literal(rows)}, {literal(key)}
        USING HINT = {literal(_RUN_WORKER + _OR_DISCARD)};
    END IF;
  END IF;
END
$signalbus$"""]
    if table is not None:
        out += [f"DROP TRIGGER IF EXISTS {quote(f'{TRIGGER_PREFIX}_{op}')} ON {table}"
                for op, _e, _r in _OPS]
    out.append(f"DROP FUNCTION IF EXISTS {function}()")
    out.append(f"DROP TABLE IF EXISTS {rows}")
    return out


def trigger_bindings() -> list[Binding]:
    """The resolved ``capture="trigger"`` bindings of the process."""
    if registry.pending():
        registry.resolve_all()
    return [b for b in registry.bindings if b.capture == "trigger"]


def _mapper(binding: Binding) -> Mapper[Any]:
    assert binding.cls is not None
    mapper = sa_inspect(binding.cls, raiseerr=False)
    if not isinstance(mapper, Mapper):
        raise BindingError(f"{binding.describe()}: {qualified_name(binding.cls)} is not a "
                           "mapped class. Bind an SQLAlchemy model.")
    if not isinstance(mapper.local_table, Table) or len(mapper.tables) > 1:
        names = ", ".join(sorted(t.name for t in mapper.tables if isinstance(t, Table)))
        raise BindingError(
            f"{binding.describe()}: capture='trigger' needs a model mapped to one table, and "
            f"{qualified_name(binding.cls)} spans {names or 'no table'} (joined-table "
            "inheritance). Bind the class whose own table changes, or use capture='orm'."
        )
    return mapper


def tables(redact: tuple[str, ...], *, default_schema: str, changes_table: str,
           channel: str) -> list[TriggerTable]:
    """The trigger-captured tables of the process's bindings, with what to store of each.

    ``redact`` is the app's folded ``SIGNALBUS_REDACT``; ``default_schema`` the schema of
    tables mapped without one; ``changes_table`` the outbox changes table (schema-qualified,
    quoted); ``channel`` the outbox ``NOTIFY`` channel.
    """
    by_table: dict[tuple[str, str], list[tuple[Mapper[Any], Binding]]] = {}
    for binding in trigger_bindings():
        mapper = _mapper(binding)
        table = mapper.local_table
        assert isinstance(table, Table)
        by_table.setdefault((table.schema or default_schema, table.name), []).append(
            (mapper, binding))
    out = []
    for (schema, name), found in sorted(by_table.items()):
        root_mapper = found[0][0].base_mapper
        table = root_mapper.local_table
        assert isinstance(table, Table)
        # every class of the hierarchy mapped to this table: each may have a plan of its own
        mappers = [m for m in root_mapper.self_and_descendants if m.local_table is table]
        needed: dict[str, None] = {}
        hidden: dict[str, None] = {}
        for m in mappers:
            plan: Plan = plans.trigger(m.class_, redact)
            if not plan.bound:
                continue
            when_fields = _when_fields(m.class_)
            needed.update(dict.fromkeys(plan.pk_keys))
            needed.update(dict.fromkeys(plan.capture))
            for key in plan.raw:
                if key in plan.capture or key in when_fields or not redacted(key, redact):
                    needed[key] = None
                else:
                    hidden[key] = None
        discriminator = None
        if root_mapper.polymorphic_on is not None:
            prop = root_mapper.get_property_by_column(root_mapper.polymorphic_on)
            discriminator = prop.key
            needed[discriminator] = None
        columns = tuple((_column(root_mapper, k), k) for k in needed)
        hidden_columns = tuple((_column(root_mapper, k), k) for k in hidden if k not in needed)
        out.append(TriggerTable(
            cls=root_mapper.class_, schema=schema, name=name, columns=columns,
            hidden=hidden_columns, pk=plans.trigger(found[0][0].class_, redact).pk_keys,
            discriminator=discriminator, changes_table=changes_table, channel=channel,
        ))
    return out


def _when_fields(cls: type[Any]) -> set[str]:
    """Attributes ``when=`` conditions of ``cls``'s trigger bindings name explicitly."""
    out: set[str] = set()
    for b in registry.bindings:
        if b.capture == "trigger" and b.cls is not None and issubclass(cls, b.cls) \
                and b.when is not None and b.when.fields is not None:
            out.update(b.when.fields)
    return out


def _column(mapper: Mapper[Any], key: str) -> str:
    prop = mapper.column_attrs[key]
    column = prop.columns[0]
    return str(column.name)


def install_sql(found: Iterable[TriggerTable]) -> list[str]:
    """Every statement installing ``found`` (idempotent)."""
    return [stmt for t in found for stmt in t.install_sql()]


def uninstall_sql(found: Iterable[TriggerTable]) -> list[str]:
    """Every statement removing ``found`` (idempotent)."""
    return [stmt for t in found for stmt in t.uninstall_sql()]


@dataclasses.dataclass(frozen=True)
class TriggerStatus:
    """One table's capture, as the bindings want it and as the database has it."""

    table: str
    """``schema.table``."""
    state: str
    """``"installed"`` (as the bindings want), ``"missing"`` (bound, not installed),
    ``"differs"`` (installed from other bindings or another signalbus: reinstall), or
    ``"unbound"`` (installed, but no binding captures the table any more: uninstall)."""
    installed: str | None
    """The installed definition's comment, if any."""
    triggers: tuple[str, ...]
    """The signalbus triggers present on the table."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_INSTALLED = text(f"""
SELECT n.nspname AS schema, c.relname AS name, t.tgname AS trigger,
       pn.nspname AS function_schema, p.proname AS function,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_namespace pn ON pn.oid = p.pronamespace
WHERE NOT t.tgisinternal AND t.tgname LIKE '{TRIGGER_PREFIX}\\_%'
  AND n.nspname = ANY(:schemas)
ORDER BY 1, 2, 3
""")

_FUNCTIONS = text(f"""
SELECT n.nspname AS schema, p.proname AS function, obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE obj_description(p.oid, 'pg_proc') LIKE '{COMMENT_PREFIX} %'
  AND n.nspname = ANY(:schemas)
""")

_ROWS = text(f"""
SELECT n.nspname, c.relname, obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relname LIKE '{ROWS_PREFIX}\\_%' AND n.nspname = ANY(:schemas)
""")

_COMMENT = re.compile(rf"^{COMMENT_PREFIX} v(\d+) (\S+) ([0-9a-f]+)$")


def _schemas(conn: Connection, found: Sequence[TriggerTable]) -> list[str]:
    """The schemas an app's captures live in: its bound tables' and the default one (the
    database may hold other apps' captures in other schemas: they are not this app's)."""
    default = conn.dialect.default_schema_name or "public"
    return sorted({default, *(t.schema for t in found)})


def _installed(conn: Connection, schemas: list[str]) -> dict[str, dict[str, Any]]:
    """What the database has in ``schemas``: per ``schema.table``, its signalbus triggers
    and function."""
    out: dict[str, dict[str, Any]] = {}
    params = {"schemas": schemas}
    for row in conn.execute(_INSTALLED, params):
        entry = out.setdefault(f"{row.schema}.{row.name}", {
            "triggers": [], "comment": row.comment, "table": (row.schema, row.name),
            "function": (row.function_schema, row.function)})
        entry["triggers"].append(row.trigger)
    for row in conn.execute(_FUNCTIONS, params):
        match = _COMMENT.match(row.comment or "")
        if match and match.group(2) not in out:
            schema, _, name = match.group(2).partition(".")
            out[match.group(2)] = {"triggers": [], "comment": row.comment,
                                   "table": (schema, name),
                                   "function": (row.schema, row.function)}
    return out


def status(conn: Connection, found: Sequence[TriggerTable]) -> list[TriggerStatus]:
    """Each bound table's capture against the database's, and installed captures no
    binding wants any more."""
    schemas = _schemas(conn, found)
    have = _installed(conn, schemas)
    out = []
    wanted = {t.key: t for t in found}
    rows_comments = {(row[0], row[1]): row[2]
                     for row in conn.execute(_ROWS, {"schemas": schemas})}
    full = {f"{TRIGGER_PREFIX}_{op}" for op, _e, _r in _OPS}
    for key, t in wanted.items():
        entry = have.get(key)
        if entry is None:
            out.append(TriggerStatus(key, "missing", None, ()))
            continue
        ok = entry["comment"] == t.comment and set(entry["triggers"]) == full \
            and entry["function"] == (t.schema, t.function) \
            and rows_comments.get((t.schema, t.rows_table)) == t.comment
        out.append(TriggerStatus(key, "installed" if ok else "differs", entry["comment"],
                                 tuple(entry["triggers"])))
    for key, entry in sorted(have.items()):
        if key not in wanted:
            out.append(TriggerStatus(key, "unbound", entry["comment"], tuple(entry["triggers"])))
    return out


def install(conn: Connection, found: Sequence[TriggerTable]) -> None:
    """Install (or replace) the capture of ``found`` on ``conn``, in its transaction."""
    for stmt in install_sql(found):
        conn.exec_driver_sql(stmt.replace("%", "%%"))


def uninstall(conn: Connection, found: Sequence[TriggerTable], *, changes_table: str,
              unbound: bool = True, discard: bool = False) -> list[str]:
    """Remove the capture of ``found`` and (``unbound``) every other signalbus capture the
    database has; the ``schema.table`` names whose capture was there.

    Refused (a database error naming the fix) while captured changes of a table wait to
    be turned into events, unless ``discard``: then they are deleted first.
    """
    have = _installed(conn, _schemas(conn, found))
    targets: list[tuple[str, str | None, str, str]] = []  # key, table, function, rows
    wanted = {t.key for t in found}
    for t in found:
        if t.key in have:
            targets.append((t.key, t.qualified, t.qualified_function, t.qualified_rows))
    if unbound:
        for key, entry in have.items():
            if key in wanted:
                continue
            schema, name = entry["table"]
            fschema, fname = entry["function"]
            table = f"{quote(schema)}.{quote(name)}" if entry["triggers"] else None
            targets.append((key, table, f"{quote(fschema)}.{quote(fname)}",
                            f"{quote(schema)}.{quote(_name(ROWS_PREFIX, name))}"))
    for key, table, function, rows in targets:
        if discard:
            conn.exec_driver_sql(
                f"DO $signalbus$ BEGIN IF to_regclass({literal(rows)}) IS NOT NULL THEN "
                f"DELETE FROM {rows}; END IF; END $signalbus$")
            conn.exec_driver_sql(f"DELETE FROM {changes_table} WHERE source_table = "
                                 f"{literal(key)}")
        for stmt in _drop_sql(table, function, rows, key):
            conn.exec_driver_sql(stmt.replace("%", "%%"))
    return [key for key, *_rest in targets]


class ContextSharing:
    """Hands :func:`signalbus.context` to the triggers: before a session's flush or ORM
    statement on PostgreSQL, ``set_config('signalbus.context', ..., true)`` on its
    transaction, once per transaction (or SAVEPOINT) and context value, and only while
    some binding says ``capture="trigger"``."""

    KEY = "_signalbus_trigger_context"

    def __init__(self) -> None:
        self._version = -1
        self._active = False

    @property
    def active(self) -> bool:
        if self._version != registry.version:
            self._active = any(b.capture == "trigger" for b in registry.bindings)
            self._version = registry.version
        return self._active

    def apply(self, session: Session) -> None:
        """Share the current context with ``session``'s transaction, if it changed."""
        if not self.active:
            return
        trans = session.get_nested_transaction() or session.get_transaction()
        if trans is None:
            return
        ctx = current_context()
        value = json.dumps(ctx, separators=(",", ":")) if ctx else ""
        mark = session.info.get(self.KEY)
        if mark is not None and mark[0]() is trans:
            if mark[1] == value:
                return
        elif not value:
            return  # a new transaction starts without the setting
        conn = session.connection()
        if conn.dialect.name != "postgresql":
            return
        share_context(conn, value)
        session.info[self.KEY] = (weakref.ref(trans), value)


def share_context(conn: Connection, value: str | None = None) -> None:
    """Set the ``signalbus.context`` of ``conn``'s transaction (default: the current
    :func:`signalbus.context`, as JSON) for the triggers of trigger-captured tables: what
    signalbus does for sessions, for code that writes through a Core connection."""
    if value is None:
        ctx = current_context()
        value = json.dumps(ctx, separators=(",", ":")) if ctx else ""
    conn.execute(select(func.set_config(CONTEXT_SETTING, value, True)))


sharing = ContextSharing()
"""The process's :class:`ContextSharing` (bindings are process-wide, so is its cache)."""
