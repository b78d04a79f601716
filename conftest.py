"""Fixtures shared by the whole suite (core, handlers, examples): databases and isolation.

Every database test runs on SQLite (a file in the test's tmp dir) and on PostgreSQL.
PostgreSQL is reached at ``SIGNALBUS_TEST_POSTGRES`` (default: the local server,
database ``test``); each pytest process works in a schema of its own so that parallel
runs do not collide. Without a server, PostgreSQL tests are skipped locally and fail
under ``CI=true``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Generator, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

import signalbus.sqlite
from signalbus import signals
from signalbus.bindings import registry

PG_URL = os.environ.get(
    "SIGNALBUS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PG_SCHEMA = f"sb_test_{os.getpid()}"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_pg_state: dict[str, Any] = {}


def _pg_error() -> str | None:
    if "error" not in _pg_state:
        try:
            engine = create_engine(PG_URL)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
                conn.execute(text(f'CREATE SCHEMA "{PG_SCHEMA}"'))
            engine.dispose()
            _pg_state["error"] = None
        except Exception as exc:  # the server is down or unreachable
            _pg_state["error"] = f"{type(exc).__name__}: {exc}"
    return _pg_state["error"]  # type: ignore[no-any-return]


def require_postgres() -> str:
    """The PostgreSQL URL, or skip (fail under CI=true) when the server is missing."""
    error = _pg_error()
    if error is not None:
        message = f"PostgreSQL at {PG_URL} is not available: {error}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)", pytrace=False)
        pytest.skip(message)
    return PG_URL


def pg_engine(**kwargs: Any) -> Engine:
    """An engine on the test PostgreSQL database, working in this process's schema."""
    url = require_postgres()
    engine = create_engine(url, connect_args={"options": f"-csearch_path={PG_SCHEMA}"},
                           **kwargs)
    return engine


def flask_sqlalchemy_config(database_url: str) -> dict[str, Any]:
    """Flask-SQLAlchemy settings for a test database URL (PostgreSQL in this run's schema)."""
    config: dict[str, Any] = {"SQLALCHEMY_DATABASE_URI": database_url}
    if database_url.startswith("postgresql"):
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "connect_args": {"options": f"-csearch_path={PG_SCHEMA}"}
        }
    return config


def start_host(app: Any, db: Any, *, fresh: bool = False) -> Any:
    """Wire Flask-SQLAlchemy ``db`` into ``app``, create its tables (and the outbox's in
    outbox mode; ``fresh`` drops leftovers first) and register a new ``SignalBus``.

    A failing ``init_app`` (what plugin tests provoke) drops the tables again.
    """
    import signalbus.outbox

    if app.config.get("SIGNALBUS_DELIVERY") == "outbox":
        signalbus.outbox.include_in(db.metadata)
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        if fresh:
            db.drop_all()
        db.create_all()
    bus = signalbus.SignalBus()
    try:
        bus.init_app(app, db=db)
    except BaseException:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()
        raise
    return bus


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _pg_state.get("error") is None and "error" in _pg_state:
        try:
            engine = create_engine(PG_URL)
            with engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
            engine.dispose()
        except Exception:
            pass


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A database URL: a SQLite file, then the PostgreSQL test schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite'}"
    require_postgres()
    return PG_URL


@pytest.fixture
def fsa_config(database_url: str) -> dict[str, Any]:
    """:func:`flask_sqlalchemy_config` of :func:`database_url`."""
    return flask_sqlalchemy_config(database_url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine for :func:`database_url`; SQLite gets real transactions."""
    if database_url.startswith("sqlite"):
        eng = signalbus.sqlite.configure(create_engine(database_url))
    else:
        eng = pg_engine()
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def _isolate_signalbus() -> Generator[None, None, None]:
    """Undo the bindings and receivers a test added (declarations stay: they are harmless)."""
    saved_bindings = registry.snapshot()
    saved_receivers = {name: dict(sig.receivers) for name, sig in signals._signals.items()}
    yield
    registry.restore(saved_bindings)
    for name, sig in list(signals._signals.items()):
        before = saved_receivers.get(name, {})
        for receiver_id, ref in list(sig.receivers.items()):
            if receiver_id not in before:
                fn = ref() if isinstance(ref, weakref.ref) else ref
                if fn is not None:
                    sig.disconnect(fn)
