"""Outbox worker acknowledgements: a batch's successes are recorded together (one
statement per batch), failures at once, and a long batch records its successes as it
goes (``SIGNALBUS_OUTBOX_ACK_INTERVAL``) — on PostgreSQL also while a slow receiver
runs; a lease that lapses during a delivery is logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import String, event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event, Permanent
from signalbus.bus import Runtime
from signalbus.outbox import DEAD, DONE, deliveries, outbox
from signalbus.outbox.worker import Worker, drain


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


def states(engine: Engine, table: Any = outbox) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(table.c.state, func.count())
                                 .group_by(table.c.state)).all())


def done(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(outbox)
                                .where(outbox.c.state == DONE)).scalar_one())


class Statements:
    """The statements an engine runs that acknowledge events (settle them as done)."""

    def __init__(self, engine: Engine) -> None:
        self.acks: list[str] = []
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        compact = statement.replace(" ", "")
        if compact.startswith("UPDATEsignalbus_outboxSETstate=") and \
                "last_error" not in compact and "RETURNING" not in compact:
            self.acks.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_the_successes_of_a_batch_are_recorded_in_one_statement(runtime, engine):
    add(runtime, 50)  # 50 events, 100 deliveries
    watch = Statements(engine)
    try:
        stats = drain(runtime, engine=engine, batch=20, ack_interval=60)
    finally:
        watch.close()
    assert stats.delivered == 100
    assert stats.batches == 3
    assert len(watch.acks) == 3  # batches of 20, 20, 10: one acknowledgement each
    assert states(engine) == {DONE: 50}
    assert states(engine, deliveries) == {}  # nothing per receiver on the happy path
    assert len(SEEN) == 100 and len(set(SEEN)) == 100


@pytest.mark.signalbus_receiver_errors("log")
def test_a_batch_with_failures_records_every_outcome_and_repeats_nothing(runtime, engine):
    add(runtime, 10)
    BEHAVIOUR["refuse"] = {"item3", "item7"}
    stats = drain(runtime, engine=engine, batch=100)
    assert (stats.delivered, stats.dead) == (18, 2)
    assert states(engine) == {DONE: 10}
    assert states(engine, deliveries) == {DEAD: 2}
    SEEN.clear()
    stats = drain(runtime, engine=engine)  # nothing due: no success is made again
    assert (stats.delivered, SEEN) == (0, [])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_records_successes_between_deliveries(runtime, engine):
    add(runtime, 6)  # 6 events, one batch
    recorded_when_called: list[int] = []

    def slow(event: Event) -> None:
        recorded_when_called.append(done(engine))
        time.sleep(0.25)  # longer than ack_interval

    BEHAVIOUR["first"] = slow
    stats = Worker(runtime, engine=engine, listen=False, handle_signals=False, batch=100,
                   ack_interval=0.2).run(once=True)
    assert stats.delivered == 12 and stats.batches == 1
    # each slow call outlasts ack_interval, so the events so far are recorded before
    # the next one starts, long before the batch ends
    assert recorded_when_called == [0, 1, 2, 3, 4, 5]
    assert states(engine) == {DONE: 6}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_successes_are_recorded_while_a_slow_receiver_runs(runtime, engine):
    with runtime.session_factory() as s:
        s.add_all(Item(name=f"quick{i}") for i in range(32))
        s.add(Item(name="slow"))
        s.commit()
    seen_during: list[int] = []

    def slow(event: Event) -> None:
        if event.data["name"] == "slow":
            time.sleep(0.6)  # three ack intervals
            seen_during.append(done(engine))

    BEHAVIOUR["first"] = slow
    stats = Worker(runtime, engine=engine, listen=False, handle_signals=False, batch=100,
                   ack_interval=0.2).run(once=True)
    assert stats.batches == 1
    # the 32 quick events were acknowledged while the slow one ran: a worker killed
    # then would repeat only the slow one
    assert seen_during == [32]
    assert states(engine) == {DONE: 33}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lease_lost_during_a_delivery_is_logged(runtime, engine, caplog):
    add(runtime, 1)

    def taken(event: Event) -> None:
        with engine.begin() as conn:  # another worker took the claim meanwhile
            conn.execute(update(outbox).values(claimed_by="another-worker"))
        time.sleep(0.5)  # the lease renewal (every half lease) runs meanwhile

    BEHAVIOUR["first"] = taken
    with caplog.at_level(logging.WARNING, logger="signalbus"):
        Worker(runtime, engine=engine, listen=False, handle_signals=False, lease=0.4,
               ack_interval=0.05).run(once=True)
    lapsed = [r.getMessage() for r in caplog.records if "lapsed" in r.getMessage()]
    assert lapsed and "the lease of 1 events and 0 deliveries lapsed and another worker " \
        "took them" in lapsed[0], lapsed
