"""The relay and the hand-over statements, in this process, on SQLite and PostgreSQL:
what is expanded, what is handed over (row heads only), the token and attempt a task
must carry, a broker that is down, and the configuration errors."""

from __future__ import annotations

import os
from typing import Any

import pytest
from sqlalchemy import String, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.celery
import signalbus.outbox
from signalbus.celery.relay import BrokerUnavailable, Relay
from signalbus.errors import ConfigurationError
from signalbus.outbox import deliveries, sql, utcnow

REDIS = "redis://127.0.0.1:6379/7"


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "cel_relay_tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))


def first(sender: Any, event: Any, **kw: Any) -> None:
    """A receiver (never run here)."""


def second(sender: Any, event: Any, **kw: Any) -> None:
    """Another receiver."""


@pytest.fixture
def tables(engine: Engine) -> Any:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    signalbus.bind(Ticket, "insert", "cel_ticket_saved")
    signalbus.bind(Ticket, "update", "cel_ticket_saved")
    yield engine
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


def runtime(engine: Engine, **config: Any) -> Any:
    rt = signalbus.SignalBus().attach(sessionmaker(engine), config={
        "SIGNALBUS_DELIVERY": "celery", "SIGNALBUS_CELERY_BROKER": REDIS,
        "SIGNALBUS_CELERY_QUEUE": f"signalbus_relay_test_{os.getpid()}", **config},
        plugins=False)
    rt.connect("cel_ticket_saved", first)
    rt.connect("cel_ticket_saved", second)
    return rt


@pytest.fixture
def redis_queue() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        client.ping()
    except Exception as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Redis is not available: {exc} (CI=true)", pytrace=False)
        pytest.skip(f"Redis is not available: {exc}")
    name = f"signalbus_relay_test_{os.getpid()}"
    client.delete(name)
    yield client, name
    client.delete(name)
    client.close()


@pytest.fixture
def relays() -> Any:
    """Relays made by the test, closed after it."""
    made: list[Relay] = []

    def make(rt: Any) -> Relay:
        made.append(Relay(rt, handle_signals=False, listen=False))
        return made[-1]

    yield make
    for relay in made:
        relay.close()


def commit_tickets(rt: Any) -> None:
    with rt.session_factory() as s:
        s.add_all([Ticket(id=1, title="a"), Ticket(id=2, title="b")])
        s.commit()
        s.get(Ticket, 1).title = "a2"  # a second event of row 1
        s.commit()
    with rt.session_factory() as s:
        s.add(Ticket(id=3, title="rolled back"))
        s.flush()
        s.rollback()


def test_the_relay_expands_events_and_hands_over_row_heads_only(tables, redis_queue, relays):
    client, queue = redis_queue
    rt = runtime(tables)
    signalbus.celery.init_celery(rt)
    commit_tickets(rt)
    relay = relays(rt)
    # row 1's second event is claimed once its first is settled (expanded): next round
    assert relay.run_round() == 2 + 4  # 2 events expanded, 4 deliveries handed over
    assert relay.run_round() == 1 + 0  # the third expanded; its deliveries wait their turn
    assert relay.stats.deliveries == 6
    with tables.connect() as conn:
        rows = conn.execute(select(deliveries).order_by(deliveries.c.id)).all()
        assert sql.handed_over(conn, utcnow()) == 4
    assert [(r.receiver.rsplit(":", 1)[1], r.row_key.rsplit("#", 1)[1]) for r in rows] == [
        ("first", "1"), ("second", "1"), ("first", "2"), ("second", "2"),
        ("first", "1"), ("second", "1")]
    handed = [r for r in rows if r.claimed_by]
    assert [r.id for r in handed] == [1, 2, 3, 4]  # row 1's second event waits its turn
    assert all(r.claimed_by.startswith("celery:relay:") for r in handed)
    assert client.llen(queue) == 4  # sent after the claim's commit; nothing of ticket 3
    assert relay.run_round() == 0


def test_a_task_must_carry_the_token_and_attempt_of_its_hand_over(tables, redis_queue,
                                                                 relays):
    rt = runtime(tables)
    signalbus.celery.init_celery(rt)
    commit_tickets(rt)
    relay = relays(rt)
    relay.run_round()
    relay.run_round()
    now = utcnow()
    with tables.begin() as conn:
        token = conn.execute(select(deliveries.c.claimed_by).where(deliveries.c.id == 1)
                             ).scalar_one()
        assert sql.take_handed_over(conn, 1, token="celery:other", attempt=1, until=now) is None
        assert sql.take_handed_over(conn, 1, token=token, attempt=2, until=now) is None
        row = sql.take_handed_over(conn, 1, token=token, attempt=1, until=now)
        assert row is not None and row.payload["signal"] == "cel_ticket_saved"
        assert sql.record_handed_over(conn, 1, token="celery:other", state="delivered",
                                      attempts=1, now=now) is False
        assert sql.record_handed_over(conn, 1, token=token, state="delivered", attempts=1,
                                      now=now) is True
        # a redelivered task finds it settled: nothing to do
        assert sql.take_handed_over(conn, 1, token=token, attempt=1, until=now) is None
        assert sql.handed_over(conn, now) == 3


def test_a_broker_that_is_down_hands_the_deliveries_back(tables, relays):
    rt = runtime(tables, SIGNALBUS_CELERY_BROKER="redis://127.0.0.1:1/0")
    signalbus.celery.init_celery(rt)
    commit_tickets(rt)
    relay = relays(rt)
    with pytest.raises(BrokerUnavailable, match="4 of 4 tasks could not be sent"):
        relay.run_round()
    relay.expand(utcnow())
    with tables.connect() as conn:
        claimed = conn.execute(select(deliveries.c.claimed_by)).scalars().all()
        assert len(claimed) == 6 and set(claimed) == {None}  # handed over again later
        assert sql.handed_over(conn, utcnow()) == 0


def test_configuration_errors_name_the_fix(tables):
    inline = signalbus.SignalBus().attach(sessionmaker(tables), plugins=False)
    with pytest.raises(ConfigurationError, match="SIGNALBUS_DELIVERY = 'celery'"):
        signalbus.celery.init_celery(inline)
    no_broker = signalbus.SignalBus().attach(sessionmaker(tables), plugins=False,
                                             config={"SIGNALBUS_DELIVERY": "celery"})
    with pytest.raises(ConfigurationError, match="set SIGNALBUS_CELERY_BROKER"):
        signalbus.celery.init_celery(no_broker)
    with pytest.raises(ConfigurationError, match="call signalbus.celery.init_celery"):
        Relay(no_broker)
    with pytest.raises(ConfigurationError, match="SIGNALBUS_CELERY_LEASE is 'soon'"):
        signalbus.SignalBus().attach(sessionmaker(tables), plugins=False, config={
            "SIGNALBUS_DELIVERY": "celery", "SIGNALBUS_CELERY_LEASE": "soon"})


def test_a_host_celery_app_gets_the_task(tables):
    from celery import Celery

    host = Celery("host", broker=REDIS)
    rt = runtime(tables)
    assert signalbus.celery.init_celery(rt, celery=host) is host
    task = host.tasks["signalbus.deliver"]
    assert task.acks_late and task.reject_on_worker_lost
    assert rt.backend.celery is host


def test_replay_in_celery_mode_is_handed_over_like_any_delivery(tables, redis_queue, relays):
    from signalbus.outbox import admin

    client, queue = redis_queue
    rt = runtime(tables)
    signalbus.celery.init_celery(rt)
    commit_tickets(rt)
    relay = relays(rt)
    while relay.run_round():
        pass
    with tables.begin() as conn:  # as if every task had reported
        conn.execute(deliveries.update().values(state="delivered", claimed_by=None,
                                                claimed_until=None, attempts=1))
    client.delete(queue)
    counts = admin.replay(rt, tables, rt.backend.settings, signals=["cel_ticket_saved"])
    assert counts["events"] == 3 and counts["reset"] == 6
    assert relay.run_round() == 4  # the row heads again; row 1's second event after them
    assert client.llen(queue) == 4


def test_two_copies_of_a_task_never_hold_one_delivery_at_once(tables):
    with tables.connect() as a, tables.connect() as b:
        a = a.execution_options(isolation_level="AUTOCOMMIT")
        b = b.execution_options(isolation_level="AUTOCOMMIT")
        assert sql.try_lock_delivery(a, 42) is True
        postgres = tables.dialect.name == "postgresql"
        assert sql.try_lock_delivery(b, 42) is not postgres  # SQLite: no lock (one worker)
        sql.unlock_delivery(b, 42, locked=not postgres)
        sql.unlock_delivery(a, 42)
        assert sql.try_lock_delivery(b, 42) is True
        sql.unlock_delivery(b, 42)
        if postgres:  # the pooled connection goes back as it came
            assert a.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_relay_started_while_the_database_is_down_waits_for_it(tables, redis_queue, caplog):
    import logging

    from tests.test_outbox_robustness import Proxy, pg_via, run_in_thread, wait_for

    client, queue = redis_queue
    rt = runtime(tables)
    signalbus.celery.init_celery(rt)
    proxy = Proxy((tables.url.host or "127.0.0.1", tables.url.port or 5432))
    down = pg_via(proxy)
    relay = Relay(rt, engine=down, poll=0.05, handle_signals=False, listen=False)
    with caplog.at_level(logging.WARNING, logger="signalbus"):
        thread, errors = run_in_thread(relay)  # type: ignore[arg-type]
        try:
            wait_for(lambda: sum("database unavailable" in r.getMessage()
                                 for r in caplog.records) >= 3, 30, "no retry was logged")
            assert thread.is_alive() and not errors  # it waits, it does not exit
            commit_tickets(rt)
            proxy.start()  # the database is back
            wait_for(lambda: client.llen(queue) >= 2, 30, "nothing was handed over")
        finally:
            relay.stop()
            thread.join(30)
            relay.close()
            proxy.stop()
            down.dispose()
    assert not errors, errors
    first_line = next(r.getMessage() for r in caplog.records
                      if "database unavailable" in r.getMessage())
    assert first_line.startswith(f"signalbus relay {relay.name}: database unavailable "
                                 "(attempt 1), retrying in ")
