"""The same Event (every field but attempt) reaches a receiver in inline and outbox mode."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import JSON, DateTime, LargeBinary, Numeric, String, Uuid
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event
from signalbus.bus import Runtime


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Base(DeclarativeBase):
    pass


class Parcel(Base):
    __tablename__ = "ob_parity_parcels"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(100))
    weight: Mapped[decimal.Decimal] = mapped_column(Numeric(10, 3))
    ref: Mapped[uuid.UUID] = mapped_column(Uuid)
    shipped_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    size: Mapped[Size]
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    ratio: Mapped[float]


GOT: list[tuple[Any, Event]] = []


def keep(sender: Any, event: Event, **kw: Any) -> None:
    GOT.append((sender, event))


@pytest.fixture
def tables(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    GOT.clear()
    yield engine
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


def make_runtime(engine: Engine, delivery: str) -> Runtime:
    rt = signalbus.SignalBus().attach(
        sessionmaker(engine), config={"SIGNALBUS_DELIVERY": delivery}, plugins=False)
    rt.connect("ob_parcel_saved", keep)
    rt.connect("ob_parcel_changed", keep)
    return rt


def change(runtime: Runtime) -> None:
    """An insert with every kind of value, then an update of it (two transactions)."""
    with runtime.session_factory() as s, signalbus.context(actor="ada", request_id="r-1"):
        s.add(Parcel(
            id=1, label="Grüße ✓", weight=decimal.Decimal("1.250"),
            ref=uuid.UUID("12345678-1234-5678-1234-567812345678"),
            shipped_at=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC), size=Size.LARGE,
            extra={"z": [1, 2.5, None], "a": {"nested": True}}, blob=b"\x00\xff", ratio=0.1,
        ))
        s.commit()
        parcel = s.get(Parcel, 1)
        parcel.size = Size.SMALL
        parcel.extra = {"b": "changed"}
        s.commit()


@pytest.fixture
def bindings() -> None:
    signalbus.bind(Parcel, "insert", "ob_parcel_saved")
    signalbus.bind(Parcel, "update", "ob_parcel_changed")


def test_the_stored_event_is_the_event_inline_delivery_hands_over(tables, bindings,
                                                                  signalbus_drain):
    runtime = make_runtime(tables, "outbox")
    prepared: list[tuple[Any, Event]] = []
    store = runtime.backend.prepare

    def observe(session: Any, events: list[tuple[Any, Event]]) -> None:
        prepared.extend(events)  # what inline delivery would hand to receivers
        store(session, events)

    runtime.backend.prepare = observe  # type: ignore[method-assign]
    change(runtime)
    signalbus_drain(runtime)
    assert [e.signal for _, e in GOT] == ["ob_parcel_saved", "ob_parcel_changed"]
    for (sender, delivered), (_, built) in zip(GOT, prepared, strict=True):
        assert sender is Parcel
        assert delivered == built  # every field (attempt is 1 on both)
        assert json.dumps(delivered.to_dict()) == json.dumps(built.to_dict())  # key order too
        assert type(delivered.pk) is type(built.pk)
        assert delivered.occurred_at.tzinfo is not None


def test_inline_and_outbox_receivers_get_equal_events(tables, bindings, signalbus_drain):
    change(make_runtime(tables, "inline"))
    inline = [e for _, e in GOT]
    GOT.clear()
    Base.metadata.drop_all(tables)
    Base.metadata.create_all(tables)
    outbox_runtime = make_runtime(tables, "outbox")
    change(outbox_runtime)
    signalbus_drain(outbox_runtime)
    outbox = [e for _, e in GOT]

    def comparable(event: Event) -> Event:  # a new transaction: a new id and time
        return dataclasses.replace(event, id="-", occurred_at=dt.datetime.min)

    assert [comparable(e) for e in outbox] == [comparable(e) for e in inline]
    assert inline[1].changes == {"size": ("l", "s"), "extra": ({"z": (1, 2.5, None),
                                 "a": {"nested": True}}, {"b": "changed"})}
    assert [dict(e.context) for e in outbox] == [{"actor": "ada", "request_id": "r-1"}] * 2
    assert outbox[0].data["blob"] == "AP8="
    assert outbox[0].data["weight"] == "1.250"
