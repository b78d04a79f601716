"""Fixtures of the core suite: models on the parametrised database, a bus, a recorder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import JSON, DateTime, ForeignKey, Numeric, String, Uuid, func
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
from signalbus import Event


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

