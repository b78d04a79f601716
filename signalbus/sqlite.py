"""SQLite transactions that SAVEPOINTs can trust.

Python's ``sqlite3`` driver opens transactions lazily and commits a SAVEPOINT's work
at ``RELEASE`` when no transaction was open yet, so a later ROLLBACK cannot undo it
and the events signalbus delivered would disagree with what the database kept.
SQLAlchemy's documented fix (“Serializable isolation / Savepoints / Transactional
DDL”) is to turn off the driver's own transaction handling and emit ``BEGIN``
ourselves; :func:`configure` applies it. :func:`check_engine` warns once per engine
that lacks it.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from .errors import SignalBusWarning

__all__ = ["SQLiteTransactionWarning", "check_engine", "configure"]

_MARK = "_signalbus_sqlite_configured"
_warned: weakref.WeakSet[Engine] = weakref.WeakSet()


class SQLiteTransactionWarning(SignalBusWarning):
    """A SQLite engine uses the driver's lazy transactions, which break SAVEPOINTs."""


IMMEDIATE = "signalbus_sqlite_immediate"
"""Execution option: on an engine :func:`configure` set up, begin with ``BEGIN IMMEDIATE``
(take the write lock first, waiting for it) instead of ``BEGIN``."""


def configure(engine: Any) -> Any:
    """Give a SQLite ``engine`` (sync, or async through aiosqlite) real transactions.

    Call it right after ``create_engine``, before the first connection. Returns the
    engine. Harmless on other databases.
    """
    sync = getattr(engine, "sync_engine", engine)
    if sync.dialect.name != "sqlite" or getattr(sync, _MARK, False):
        return engine

    @event.listens_for(sync, "connect")
    def _no_driver_transactions(dbapi_connection: Any, record: Any) -> None:
        # the driver must not BEGIN (or COMMIT at RELEASE) on its own
        dbapi_connection.isolation_level = None

    @event.listens_for(sync, "begin")
    def _begin(conn: Any) -> None:
        # IMMEDIATE for a transaction that reads, then writes, beside other writers (a
        # deferred one cannot wait for their lock: SQLite answers "database is locked")
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    setattr(sync, _MARK, True)
    return engine


def check_engine(engine: Any) -> None:
    """Warn once if ``engine`` is SQLite without :func:`configure` or an equivalent."""
    sync = getattr(engine, "sync_engine", engine)
    if not isinstance(sync, Engine) or sync.dialect.name != "sqlite" or sync in _warned:
        return
    if getattr(sync, _MARK, False) or sync.dispatch.begin:
        return  # ours, or the app's own "begin" listener (SQLAlchemy's recipe)
    _warned.add(sync)
    warnings.warn(
        f"SQLite engine {sync.url!r} uses the sqlite3 driver's own transaction handling, "
        "which commits a SAVEPOINT's work at RELEASE: a later rollback cannot undo it, "
        "and signalbus would deliver events for rows the database kept. Call "
        "signalbus.sqlite.configure(engine) after create_engine (SQLAlchemy's documented "
        "SQLite transaction recipe).",
        SQLiteTransactionWarning,
        stacklevel=3,
    )


def check_target(target: Any) -> None:
    """Check the engine bound to a session factory or session, when one can be found.

    Careful with scoped sessions: reading an attribute through their proxy would create
    the scope's session early.
    """
    from sqlalchemy.orm import Session, scoped_session

    holder = target
    if isinstance(holder, scoped_session) or type(holder).__name__ == "async_scoped_session":
        holder = holder.session_factory
    kw = getattr(holder, "kw", None)  # sessionmaker, async_sessionmaker
    if isinstance(kw, dict):
        bind = kw.get("bind")
    elif isinstance(holder, Session):
        bind = holder.bind
    else:  # AsyncSession
        bind = getattr(holder, "bind", None)
    if bind is not None:
        check_engine(bind)
