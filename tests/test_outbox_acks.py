"""Outbox worker acknowledgements: a batch's successes are recorded together (one
statement per batch), failures at once, and a long batch records its successes as it
goes (``SIGNALBUS_OUTBOX_ACK_INTERVAL``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import String, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event, Permanent
from signalbus.bus import Runtime
from signalbus.outbox import DEAD, DELIVERED, deliveries
from signalbus.worker import Worker, drain


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "ob_ack_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


SEEN: list[tuple[str, str]] = []
"""(receiver, item name) of every call."""
BEHAVIOUR: dict[str, Any] = {}


def first(sender: Any, event: Event, **kw: Any) -> None:
    SEEN.append(("first", event.data["name"]))
    hook = BEHAVIOUR.get("first")
    if hook is not None:
        hook(event)


def second(sender: Any, event: Event, **kw: Any) -> None:
    SEEN.append(("second", event.data["name"]))
    if event.data["name"] in BEHAVIOUR.get("refuse", ()):
        raise Permanent("refused")


@pytest.fixture
def runtime(engine: Engine) -> Iterator[Runtime]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    SEEN.clear()
    BEHAVIOUR.clear()
    signalbus.bind(Item, "insert", "ob_ack_added")
    rt = signalbus.SignalBus().attach(sessionmaker(engine), plugins=False,
                                      config={"SIGNALBUS_DELIVERY": "outbox"})
    rt.connect("ob_ack_added", first)
    rt.connect("ob_ack_added", second)
    yield rt
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


def add(runtime: Runtime, count: int) -> None:
    with runtime.session_factory() as s:
        s.add_all(Item(name=f"item{i}") for i in range(count))
        s.commit()


def states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(deliveries.c.state, func.count())
                                 .group_by(deliveries.c.state)).all())


class Statements:
    """The statements an engine runs that record deliveries as delivered."""

    def __init__(self, engine: Engine) -> None:
        self.acks: list[str] = []
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        compact = statement.replace(" ", "")
        if compact.startswith("UPDATEsignalbus_deliveriesSETstate=") and \
                "last_error" not in compact:
            self.acks.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_the_successes_of_a_batch_are_recorded_in_one_statement(runtime, engine):
    add(runtime, 25)  # 50 deliveries
    watch = Statements(engine)
    try:
        stats = drain(runtime, engine=engine, batch=20)
    finally:
        watch.close()
    assert stats.delivered == 50
    assert stats.batches == 3
    assert len(watch.acks) == 3  # batches of 20, 20, 10: one acknowledgement each
    assert states(engine) == {DELIVERED: 50}
    assert len(SEEN) == 50 and len(set(SEEN)) == 50


@pytest.mark.signalbus_receiver_errors("log")
def test_a_batch_with_failures_records_every_outcome_and_repeats_nothing(runtime, engine):
    add(runtime, 10)
    BEHAVIOUR["refuse"] = {"item3", "item7"}
    stats = drain(runtime, engine=engine, batch=100)
    assert (stats.delivered, stats.dead) == (18, 2)
    assert states(engine) == {DELIVERED: 18, DEAD: 2}
    SEEN.clear()
    stats = drain(runtime, engine=engine)  # nothing due: no success is made again
    assert (stats.delivered, SEEN) == (0, [])


def test_a_long_batch_records_its_successes_as_it_goes(runtime, engine):
    add(runtime, 6)  # 12 deliveries, one batch
    recorded_when_called: list[int] = []

    def slow(event: Event) -> None:
        with engine.connect() as conn:
            recorded_when_called.append(conn.execute(
                select(func.count()).select_from(deliveries)
                .where(deliveries.c.state == DELIVERED)).scalar_one())
        time.sleep(0.25)  # longer than ack_interval

    BEHAVIOUR["first"] = slow
    stats = Worker(runtime, engine=engine, listen=False, handle_signals=False, batch=100,
                   ack_interval=0.2).run(once=True)
    assert stats.delivered == 12 and stats.batches == 1
    # each slow call outlasts ack_interval, so the successes so far are recorded right
    # after it (before the fast "second" call that follows), long before the batch ends
    assert recorded_when_called == [0, 1, 3, 5, 7, 9]
    assert states(engine) == {DELIVERED: 12}
