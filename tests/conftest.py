"""Fixtures of the core suite: models on the parametrised database, a bus, a recorder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import JSON, DateTime, ForeignKey, MetaData, Numeric, String, Uuid, func
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event
from signalbus.runtime import Runtime


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass
class Models:
    Base: type[Any]
    User: type[Any]
    Order: type[Any]
    Note: type[Any]


@pytest.fixture
def models(engine: Engine) -> Iterator[Models]:
    """Fresh mapped classes and tables for one test."""

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))
        name: Mapped[str | None] = mapped_column(String(200))
        plan: Mapped[str] = mapped_column(String(20), default="free")
        password_hash: Mapped[str | None] = mapped_column(String(200))
        api_key: Mapped[str | None] = mapped_column(String(200))
        created_at: Mapped[dt.datetime] = mapped_column(
            DateTime, server_default=func.current_timestamp()
        )

    class Order(Base):
        __tablename__ = "orders"
        id: Mapped[int] = mapped_column(primary_key=True)
        user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
        total: Mapped[decimal.Decimal] = mapped_column(Numeric(10, 2))
        ref: Mapped[uuid.UUID] = mapped_column(Uuid)
        placed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
        color: Mapped[Color] = mapped_column(default=Color.RED)
        extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    class Note(Base):
        __tablename__ = "notes"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str] = mapped_column(String(200))
        public_id: Mapped[str | None] = mapped_column(String(40))

    Base.metadata.create_all(engine)
    try:
        yield Models(Base, User, Order, Note)
    finally:
        Base.metadata.drop_all(engine)


@pytest.fixture
def Session(engine: Engine) -> sessionmaker[Any]:  # noqa: N802 - a factory, named like one
    return sessionmaker(engine)


@pytest.fixture
def bus(Session: sessionmaker[Any]) -> signalbus.SignalBus:  # noqa: N803
    """A bus of its own, attached to :func:`Session`, no entry-point plugins."""
    b = signalbus.SignalBus()
    b.attach(Session, plugins=False)
    return b


class Recorder:
    """Connects to signals and keeps ``(signal, sender, event)`` in delivery order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Event]] = []
        self._fns: list[Any] = []

    def listen(self, *names: str) -> Recorder:
        for name in names:
            def fn(sender: Any, event: Event, _name: str = name, **kw: Any) -> None:
                self.calls.append((_name, sender, event))

            signalbus.signal(name).connect(fn)
            self._fns.append(fn)  # blinker holds receivers weakly
        return self

    @property
    def events(self) -> list[Event]:
        return [e for _, _, e in self.calls]

    @property
    def names(self) -> list[str]:
        return [n for n, _, _ in self.calls]

    def of(self, name: str) -> list[Event]:
        return [e for n, _, e in self.calls if n == name]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()



# -- a bus in each delivery mode ------------------------------------------------------


@pytest.fixture(params=["inline", "outbox"])
def delivery(request: pytest.FixtureRequest) -> str:
    """``SIGNALBUS_DELIVERY`` of the test: each test using it runs in both modes."""
    return str(request.param)


@pytest.fixture
def mode_tables(engine: Engine, delivery: str) -> Iterator[Callable[[MetaData], Engine]]:
    """Create a test module's tables (and, in outbox mode, the outbox's) on ``engine``;
    they are dropped after the test. Returns the engine."""
    made: list[MetaData] = []

    def create(metadata: MetaData) -> Engine:
        metadata.create_all(engine)
        if delivery == "outbox":
            signalbus.outbox.create_all(engine)
        made.append(metadata)
        return engine

    yield create
    if made and delivery == "outbox":
        signalbus.outbox.drop_all(engine)
    for metadata in reversed(made):
        metadata.drop_all(engine)


class Delivered:
    """Every event a bus delivered, through one receiver of every signal: calling it
    returns (and forgets) the events so far, after draining the outbox in outbox mode."""

    def __init__(self, runtime: Runtime, delivery: str, drain: Callable[..., Any]) -> None:
        self.runtime = runtime
        self.delivery = delivery
        self._drain = drain
        self._events: list[Event] = []
        runtime.connect_all(self._record, name="tests.conftest:Delivered")

    def _record(self, sender: Any, event: Event, **kwargs: Any) -> None:
        self._events.append(event)

    def __call__(self) -> list[Event]:
        if self.delivery == "outbox":
            self._drain(self.runtime)
        out, self._events = self._events, []
        return out


@pytest.fixture
def attach_recording(delivery: str, signalbus_drain: Callable[..., Any]
                     ) -> Callable[[Engine], tuple[sessionmaker[Any], Delivered]]:
    """Attach a bus in the test's delivery mode (call it after the test's bindings) to a
    new session factory on ``engine``; returns the factory and its :class:`Delivered`."""

    def attach(engine: Engine) -> tuple[sessionmaker[Any], Delivered]:
        factory = sessionmaker(engine)
        runtime: Runtime = signalbus.SignalBus().attach(
            factory, config={"SIGNALBUS_DELIVERY": delivery}, plugins=False)
        return factory, Delivered(runtime, delivery, signalbus_drain)

    return attach
