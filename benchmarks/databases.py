"""The databases the benchmarks run on, and the ``User`` models each configuration writes.

Every configuration writes to a table of its own (same columns, same batch of values),
so that interleaved configurations never share rows, and listeners installed on one
configuration's class (a tutorial ``after_insert`` listener, signalbus's capture
listeners) never fire for another's.

Engine setup, decided once for fairness: on SQLite every SQLAlchemy configuration, the
floor included, shares one engine set up with :func:`signalbus.sqlite.configure` (real
``BEGIN``, the setup signalbus asks SQLite users for), so that the ratios measure
listeners and delivery, not the driver's transaction mode. The run also measures the
floor on an engine with the sqlite3 driver's default transaction handling (a second
file, so that the two engines' connections do not invalidate each other's page cache),
reported as its own row, so that the cost of that setup is visible too. On PostgreSQL
every configuration shares one engine working in a dedicated schema (never
``public``) that is dropped at the end of the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus.sqlite

__all__ = [
    "MODELS",
    "Base",
    "Database",
    "open_database",
    "postgres_url",
    "row_values",
]

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    """The PostgreSQL URL: ``SIGNALBUS_BENCH_POSTGRES``, else the test suite's server."""
    return os.environ.get(
        "SIGNALBUS_BENCH_POSTGRES",
        os.environ.get("SIGNALBUS_TEST_POSTGRES", POSTGRES_URL),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    """The declarative base of every benchmark model."""


class UserColumns:
    """The columns of a typical ``User``: a key, two strings, a flag and a timestamp."""

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)


class FloorUser(UserColumns, Base):
    """Inserted by the floor: plain ORM, no listener of any kind."""

    __tablename__ = "bench_floor_user"


class FloorCopyUser(UserColumns, Base):
    """The floor again, in a table of its own: its ratio to the floor is the noise."""

    __tablename__ = "bench_floor_copy_user"


class DriverFloorUser(UserColumns, Base):
    """Inserted by the floor on SQLite with the driver's default transactions."""

    __tablename__ = "bench_driver_floor_user"


class TutorialUser(UserColumns, Base):
    """Inserted with a mapper ``after_insert`` listener sending a blinker signal."""

    __tablename__ = "bench_tutorial_user"


class BufferUser(UserColumns, Base):
    """Inserted with a hand-written after-commit buffer (mapper hook, blinker after commit)."""

    __tablename__ = "bench_buffer_user"


class SignalbusUser(UserColumns, Base):
    """Bound by signalbus: every insert sends ``bench_user_registered``."""

    __tablename__ = "bench_signalbus_user"


class OutboxUser(UserColumns, Base):
    """Bound by signalbus with ``SIGNALBUS_DELIVERY="outbox"``: events are stored."""

    __tablename__ = "bench_outbox_user"


class UnboundUser(UserColumns, Base):
    """Written through a signalbus-attached session, but no binding covers it."""

    __tablename__ = "bench_unbound_user"


class UpdateFloorUser(UserColumns, Base):
    """Updated by the update floor: plain ORM, no listener."""

    __tablename__ = "bench_update_floor_user"


class UpdateBufferUser(UserColumns, Base):
    """Updated with a hand-written after-commit buffer sending when ``email`` changed."""

    __tablename__ = "bench_update_buffer_user"


class UpdateSignalbusUser(UserColumns, Base):
    """Bound by signalbus for updates with ``when=changed("email")``."""

    __tablename__ = "bench_update_signalbus_user"


MODELS: dict[str, type[UserColumns]] = {
    cls.__tablename__: cls
    for cls in (FloorUser, FloorCopyUser, DriverFloorUser, TutorialUser, BufferUser,
                SignalbusUser, OutboxUser, UnboundUser, UpdateFloorUser, UpdateBufferUser,
                UpdateSignalbusUser)
}
"""Every benchmark model by table name."""


def row_values(index: int, stamp: str = "") -> dict[str, Any]:
    """The values of row ``index`` (the same for every configuration)."""
    return {"email": f"user{index}{stamp}@example.com", "name": f"User number {index}"}


@dataclasses.dataclass
class Database:
    """One database of the run: its engines and how to reach it from a subprocess."""

    name: str
    """``"SQLite"`` or ``"PostgreSQL"``, as the report prints it."""
    url: str
    engine: Engine
    """The engine every configuration shares (SQLite: set up by signalbus.sqlite)."""
    driver_engine: Engine | None
    """SQLite only: a second file, used with the sqlite3 driver's default transactions."""
    schema: str | None
    """PostgreSQL only: the dedicated schema the run works in."""
    scratch_url: str
    """Where subprocesses create their own tables (SQLite: a file of their own)."""

    @property
    def kind(self) -> str:
        """``"sqlite"`` or ``"postgresql"``: what subprocesses are told."""
        return self.engine.dialect.name

    def clear(self, *tables: str, engine: Engine | None = None) -> None:
        """Empty ``tables`` (outside any timing) so that every repeat starts alike."""
        with (engine or self.engine).begin() as conn:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))

    def server_version(self) -> str:
        """The database's version, for the report."""
        with self.engine.connect() as conn:
            if self.kind == "sqlite":
                return "SQLite " + str(conn.exec_driver_sql("select sqlite_version()").scalar())
            version = str(conn.exec_driver_sql("show server_version").scalar())
            return "PostgreSQL " + version.split()[0]


def make_engine(kind: str, url: str, schema: str | None, *, configure: bool = True) -> Engine:
    """An engine on ``url``; PostgreSQL engines work in ``schema``.

    SQLite engines get :func:`signalbus.sqlite.configure` unless ``configure=False``.
    """
    if kind == "postgresql":
        assert schema is not None
        return create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    engine = create_engine(url)
    if configure:
        signalbus.sqlite.configure(engine)
    return engine


@contextlib.contextmanager
def open_database(kind: str, *, postgres: str | None = None) -> Iterator[Database]:
    """Create the benchmark tables on a fresh database of ``kind``; drop them after.

    SQLite: a new file in a temporary directory, removed at the end. PostgreSQL: a
    schema ``signalbus_bench_<pid>`` created here and dropped at the end, whatever
    happened in between.
    """
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="signalbus-bench-") as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            engine = make_engine("sqlite", url, None)
            # a file of its own: connections to one file invalidate each other's page
            # cache on every write, which would slow whichever configuration ran next
            driver = make_engine("sqlite", f"sqlite:///{tmp}/driver.db", None,
                                 configure=False)
            Base.metadata.create_all(engine)
            Base.metadata.create_all(driver)
            try:
                yield Database("SQLite", url, engine, driver, None,
                               f"sqlite:///{tmp}/scratch.db")
            finally:
                engine.dispose()
                driver.dispose()
        return
    url = postgres or postgres_url()
    schema = f"signalbus_bench_{os.getpid()}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = make_engine("postgresql", url, schema)
        try:
            Base.metadata.create_all(engine)
            yield Database("PostgreSQL", url, engine, None, schema, url)
        finally:
            engine.dispose()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()
