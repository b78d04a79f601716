"""Trigger capture (PostgreSQL): the database captures a table's changes, whoever makes them.

A model bound with ``bind(..., capture="trigger")`` gets three statement-level triggers
(``AFTER INSERT``/``UPDATE``/``DELETE ... REFERENCING ... TABLE ... FOR EACH STATEMENT``)
and one PL/pgSQL function, generated here from its bindings. Each statement that changes
rows writes **one** row into ``signalbus_outbox_changes`` inside the writer's transaction:
the captured columns of the rows before (``old_rows``) and after (``new_rows``) as JSON
arrays, the transaction id, the writer's ``signalbus.context`` setting, and sends a
``NOTIFY`` on the outbox channel. A worker turns those rows into events
(:mod:`signalbus.outbox.changes`).

Why statement-level triggers writing one JSON row per statement (measured side by side,
docs/delivery.md "Trigger capture"): a row-level trigger runs its function and writes one
outbox row per changed row — 6× the floor for a 10,000-row ``UPDATE`` —, where a
statement-level trigger aggregates the transition tables in one ``INSERT ... SELECT``.
``json`` (text) aggregation costs about 40% less than ``jsonb``.

Only the columns the bindings need are stored: the payload columns, the columns that
``when=`` conditions read, the primary key and the polymorphic discriminator. A redacted
column that only decides whether an update binding fires is stored as an ``md5`` digest
(under ``"~name"``), never as its value.

The generated DDL is idempotent (``CREATE OR REPLACE FUNCTION``, ``DROP TRIGGER IF
EXISTS`` then ``CREATE TRIGGER``) and versioned: the function's comment records
:data:`VERSION` and a fingerprint of the definition, which :func:`status` compares with
the bindings to report drift.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Table, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapper

from ..bindings import Binding, qualified_name, registry
from ..errors import BindingError
from .plans import Plan, plans, redacted

__all__ = [
    "VERSION",
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
        name = f"{TRIGGER_PREFIX}_{self.name}"
        if len(name) > 63:
            digest = hashlib.sha256(self.name.encode()).hexdigest()[:10]
            name = f"{name[:52]}_{digest}"
        return name

    @property
    def qualified_function(self) -> str:
        return f"{quote(self.schema)}.{quote(self.function)}"

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
        parts += [f"md5({alias}.{quote(c)}::text) AS {quote('~' + c)}" for c, _k in self.hidden]
        return ", ".join(parts)

    def function_body(self) -> str:
        """The ``CREATE OR REPLACE FUNCTION`` statement."""
        source = literal(self.key)
        ctx = f"nullif(current_setting({literal(CONTEXT_SETTING)}, true), '')::json"
        new = f"(SELECT json_agg(r) FROM (SELECT {self._select('n')} FROM signalbus_new n) r)"
        old = f"(SELECT json_agg(r) FROM (SELECT {self._select('o')} FROM signalbus_old o) r)"
        head = (f"INSERT INTO {self.changes_table} "
                "(txid, source_table, op, old_rows, new_rows, context, created_at)\n      SELECT "
                f"txid_current(), {source}, ")
        return f"""CREATE OR REPLACE FUNCTION {self.qualified_function}() RETURNS trigger
LANGUAGE plpgsql AS $signalbus$
BEGIN
  IF TG_OP = 'INSERT' THEN
    {head}'insert', NULL, {new}, {ctx}, statement_timestamp()
      WHERE EXISTS (SELECT 1 FROM signalbus_new);
  ELSIF TG_OP = 'UPDATE' THEN
    {head}'update', {old}, {new}, {ctx}, statement_timestamp()
      WHERE EXISTS (SELECT 1 FROM signalbus_new);
  ELSE
    {head}'delete', {old}, NULL, {ctx}, statement_timestamp()
      WHERE EXISTS (SELECT 1 FROM signalbus_old);
  END IF;
  IF FOUND THEN
    PERFORM pg_notify({literal(self.channel)}, '');
  END IF;
  RETURN NULL;
END
$signalbus$"""

    @property
    def fingerprint(self) -> str:
        """A digest of the definition: differs whenever the generated DDL would."""
        body = f"v{VERSION}\n{self.function_body()}"
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    @property
    def comment(self) -> str:
        return f"{COMMENT_PREFIX} v{VERSION} {self.key} {self.fingerprint}"

    def install_sql(self) -> list[str]:
        """The statements that install (or replace) this table's capture."""
        out = [self.function_body(),
               f"COMMENT ON FUNCTION {self.qualified_function}() IS {literal(self.comment)}"]
        for op, event, referencing in _OPS:
            trigger = quote(f"{TRIGGER_PREFIX}_{op}")
            out.append(f"DROP TRIGGER IF EXISTS {trigger} ON {self.qualified}")
            out.append(f"CREATE TRIGGER {trigger} AFTER {event} ON {self.qualified} "
                       f"REFERENCING {referencing} FOR EACH STATEMENT "
                       f"EXECUTE FUNCTION {self.qualified_function}()")
        return out

    def uninstall_sql(self) -> list[str]:
        """The statements that remove this table's capture."""
        return _drop_sql(self.qualified, self.qualified_function)


def _drop_sql(table: str, function: str) -> list[str]:
    out = [f"DROP TRIGGER IF EXISTS {quote(f'{TRIGGER_PREFIX}_{op}')} ON {table}"
           for op, _e, _r in _OPS]
    out.append(f"DROP FUNCTION IF EXISTS {function}()")
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
ORDER BY 1, 2, 3
""")

_FUNCTIONS = text(f"""
SELECT n.nspname AS schema, p.proname AS function, obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE obj_description(p.oid, 'pg_proc') LIKE '{COMMENT_PREFIX} %'
""")

_COMMENT = re.compile(rf"^{COMMENT_PREFIX} v(\d+) (\S+) ([0-9a-f]+)$")


def _installed(conn: Connection) -> dict[str, dict[str, Any]]:
    """What the database has: per ``schema.table``, its signalbus triggers and function."""
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(_INSTALLED):
        entry = out.setdefault(f"{row.schema}.{row.name}", {
            "triggers": [], "comment": row.comment, "table": (row.schema, row.name),
            "function": (row.function_schema, row.function)})
        entry["triggers"].append(row.trigger)
    for row in conn.execute(_FUNCTIONS):
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
    have = _installed(conn)
    out = []
    wanted = {t.key: t for t in found}
    full = {f"{TRIGGER_PREFIX}_{op}" for op, _e, _r in _OPS}
    for key, t in wanted.items():
        entry = have.get(key)
        if entry is None:
            out.append(TriggerStatus(key, "missing", None, ()))
            continue
        ok = entry["comment"] == t.comment and set(entry["triggers"]) == full \
            and entry["function"] == (t.schema, t.function)
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


def uninstall(conn: Connection, found: Sequence[TriggerTable], *,
              unbound: bool = True) -> list[str]:
    """Remove the capture of ``found`` and (``unbound``) every other signalbus capture
    the database has; the ``schema.table`` names whose capture was there."""
    have = _installed(conn)
    present = [t for t in found if t.key in have]
    statements = uninstall_sql(present)
    removed = [t.key for t in present]
    if unbound:
        wanted = {t.key for t in found}
        for key, entry in have.items():
            if key not in wanted:
                schema, name = entry["table"]
                fschema, fname = entry["function"]
                function = f"{quote(fschema)}.{quote(fname)}"
                if entry["triggers"]:
                    statements += _drop_sql(f"{quote(schema)}.{quote(name)}", function)
                else:  # the table is gone (and its triggers with it)
                    statements.append(f"DROP FUNCTION IF EXISTS {function}()")
                removed.append(key)
    for stmt in statements:
        conn.exec_driver_sql(stmt.replace("%", "%%"))
    return removed
