"""Outbox worker failures: backoff then success, Retry(after=), Permanent, dead, per-row order."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import String, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
import signalbus.outbox.worker
from signalbus import Event, Permanent, Retry
from signalbus.bus import Runtime
from signalbus.outbox import deliveries, retry
from signalbus.outbox.worker import Worker


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "ob_retry_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


CALLS: list[tuple[str, int, float, Event]] = []
"""(receiver, attempt, monotonic time, event) of every call."""
PLAN: dict[str, Callable[[Event], None]] = {}
"""What the receiver of that name does beyond recording the call."""


def _call(name: str, event: Event) -> None:
    CALLS.append((name, event.attempt, time.monotonic(), event))
    action = PLAN.get(name)
    if action is not None:
        action(event)


def flaky(sender: Any, event: Event, **kw: Any) -> None:
    _call("flaky", event)


def steady(sender: Any, event: Event, **kw: Any) -> None:
    _call("steady", event)


def calls(name: str) -> list[tuple[int, float, Event]]:
    return [(attempt, at, e) for n, attempt, at, e in CALLS if n == name]


@pytest.fixture
def runtime(engine: Engine) -> Iterator[Runtime]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    CALLS.clear()
    PLAN.clear()
    signalbus.bind(Member, "insert", "ob_retry_joined")
    signalbus.bind(Member, "update", "ob_retry_changed")
    rt = signalbus.SignalBus().attach(sessionmaker(engine), plugins=False, config={
        "SIGNALBUS_DELIVERY": "outbox",
        "SIGNALBUS_OUTBOX_MAX_ATTEMPTS": 3,
        "SIGNALBUS_OUTBOX_BACKOFF_BASE": 0,
    })
    rt.connect("ob_retry_joined", flaky)
    rt.connect("ob_retry_joined", steady)
    rt.connect("ob_retry_changed", flaky)
    rt.connect("ob_retry_changed", steady)
    yield rt
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


def join(runtime: Runtime, email: str = "a@example.com") -> None:
    with runtime.session_factory() as s:
        s.add(Member(email=email))
        s.commit()


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {r.receiver.rpartition(":")[2]: r
                for r in conn.execute(select(deliveries).order_by(deliveries.c.id))}


def run_until(worker: Worker, done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Run ``worker`` in a thread until ``done()``; then stop it and wait for it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test below
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the worker did not finish in time"
            assert not errors, errors
            time.sleep(0.01)
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert not errors, errors


@pytest.mark.signalbus_receiver_errors("log")
def test_backoff_then_success_and_no_repeat_of_the_receiver_that_succeeded(runtime, engine):
    def fail_twice(event: Event) -> None:
        if event.attempt < 3:
            raise RuntimeError(f"flaky {event.attempt}")

    PLAN["flaky"] = fail_twice
    join(runtime)
    worker = Worker(runtime, backoff_base=0.2, backoff_cap=5, poll=0.02, max_attempts=5)
    run_until(worker, lambda: len(calls("flaky")) == 3)
    attempts = calls("flaky")
    assert [a for a, _, _ in attempts] == [1, 2, 3]
    # equal jitter: at least half of base * 2 ** (attempt - 1)
    assert attempts[1][1] - attempts[0][1] >= 0.1
    assert attempts[2][1] - attempts[1][1] >= 0.2
    assert len({e.id for _, _, e in attempts}) == 1
    assert [a for a, _, _ in calls("steady")] == [1]  # tracked on its own: never repeated
    stored = rows(engine)
    assert (stored["flaky"].state, stored["flaky"].attempts) == ("delivered", 3)
    assert stored["flaky"].last_error == "RuntimeError: flaky 2"
    assert "steady" not in stored  # it succeeded with the event: no row of its own
    assert (worker.stats.delivered, worker.stats.retried, worker.stats.dead) == (2, 2, 0)


def test_retry_after_sets_the_delay(runtime, engine):
    def later(event: Event) -> None:
        if event.attempt == 1:
            raise Retry(after=0.5)

    PLAN["flaky"] = later
    join(runtime)
    # a backoff of an hour: only Retry(after=...) can bring the second attempt this soon
    worker = Worker(runtime, backoff_base=3600, poll=0.05)
    run_until(worker, lambda: len(calls("flaky")) == 2)
    (first, at1, _), (second, at2, event) = calls("flaky")
    assert (first, second, event.attempt) == (1, 2, 2)
    assert at2 - at1 >= 0.5
    assert rows(engine)["flaky"].last_error == "Retry: retry requested after 0.5s"


@pytest.mark.signalbus_receiver_errors("log")
def test_dead_after_max_attempts(runtime, engine, signalbus_drain):
    def boom(event: Event) -> None:
        raise RuntimeError(f"boom #{event.attempt}")

    PLAN["flaky"] = boom
    join(runtime)
    stats = signalbus_drain(runtime)  # backoff 0: every retry is due at once
    assert [a for a, _, _ in calls("flaky")] == [1, 2, 3]
    assert (stats.delivered, stats.retried, stats.dead) == (1, 2, 1)
    dead = rows(engine)["flaky"]
    assert (dead.state, dead.attempts, dead.last_error) == ("dead", 3, "RuntimeError: boom #3")
    assert dead.claimed_by is None
    assert signalbus_drain(runtime).delivered == 0  # dead stays dead


@pytest.mark.signalbus_receiver_errors("log")
def test_permanent_is_dead_at_once(runtime, engine, signalbus_drain):
    def refuse(event: Event) -> None:
        raise Permanent("address rejected")

    PLAN["flaky"] = refuse
    join(runtime)
    signalbus_drain(runtime)
    dead = rows(engine)["flaky"]
    assert (dead.state, dead.attempts, dead.last_error) == (
        "dead", 1, "Permanent: address rejected")


def test_drain_reports_receiver_errors_to_the_test_plugin(runtime):
    from signalbus import delivery

    def refuse(event: Event) -> None:
        raise ValueError("nope")

    PLAN["flaky"] = refuse
    join(runtime)
    seen: list[BaseException] = []
    saved = list(delivery.error_hooks)
    # in place of the test plugin's hook, which would fail this test
    delivery.error_hooks[:] = [lambda receiver, event, exc: seen.append(exc)]
    try:
        stats = signalbus.outbox.worker.drain(runtime, max_attempts=1)
    finally:
        delivery.error_hooks[:] = saved
    assert stats.dead == 1
    assert [type(exc) for exc in seen] == [ValueError]


@pytest.mark.signalbus_receiver_errors("log")
def test_a_failing_delivery_holds_back_later_events_of_its_row(runtime, engine,
                                                               signalbus_drain):
    def first_fails(event: Event) -> None:
        if event.op == "insert":
            raise RuntimeError("not yet")

    PLAN["flaky"] = first_fails
    join(runtime)
    with runtime.session_factory() as s:
        s.get(Member, 1).email = "b@example.com"
        s.commit()
    join(runtime, "other@example.com")  # another row: not held back
    signalbus_drain(runtime, backoff_base=3600)
    assert [(e.op, e.pk) for _, _, e in calls("flaky")] == [("insert", 1), ("insert", 2)]
    steady_got = [(e.op, e.pk) for _, _, e in calls("steady")]
    assert sorted(steady_got) == [("insert", 1), ("insert", 2), ("update", 1)]
    assert steady_got.index(("insert", 1)) < steady_got.index(("update", 1))
    with engine.begin() as conn:  # the insert becomes due again, then succeeds
        conn.execute(deliveries.update().values(next_attempt_at=signalbus.outbox.utcnow()))
    PLAN.clear()
    CALLS.clear()
    signalbus_drain(runtime)
    assert [(e.op, e.pk, e.attempt) for _, _, e in calls("flaky")] == [
        ("insert", 1, 2), ("insert", 2, 2), ("update", 1, 1)]


@pytest.mark.signalbus_receiver_errors("log")
def test_a_dead_delivery_no_longer_holds_back_its_row(runtime, engine, signalbus_drain):
    def insert_refused(event: Event) -> None:
        if event.op == "insert":
            raise Permanent("never")

    PLAN["flaky"] = insert_refused
    join(runtime)
    with runtime.session_factory() as s:
        s.get(Member, 1).email = "b@example.com"
        s.commit()
    signalbus_drain(runtime)
    assert [(e.op, e.attempt) for _, _, e in calls("flaky")] == [("insert", 1), ("update", 1)]


@pytest.mark.signalbus_receiver_errors("log")
def test_a_receiver_missing_in_the_worker_is_retried_then_dead(runtime, engine,
                                                              signalbus_drain):
    def boom(event: Event) -> None:
        raise RuntimeError("first attempt fails")

    PLAN["flaky"] = boom
    runtime.connect("ob_retry_joined", flaky, name="tests:gone-in-the-next-release")
    join(runtime)
    signalbus_drain(runtime, backoff_base=3600)  # its failure gets a row of its own
    runtime._receivers["ob_retry_joined"].pop()  # the worker runs code without it
    with engine.begin() as conn:
        conn.execute(deliveries.update().values(next_attempt_at=signalbus.outbox.utcnow()))
    stats = signalbus_drain(runtime)
    assert stats.dead == 2  # flaky itself, and the receiver the worker lacks
    with engine.connect() as conn:
        gone = conn.execute(select(deliveries).where(
            deliveries.c.receiver == "tests:gone-in-the-next-release")).one()
    assert (gone.state, gone.attempts) == ("dead", 3)
    assert gone.last_error.startswith(
        "ReceiverNotFound: receiver 'tests:gone-in-the-next-release' of signal "
        "'ob_retry_joined' is not connected in worker ")


def test_backoff_is_exponential_capped_and_jittered(runtime):
    worker = Worker(runtime, backoff_base=1, backoff_cap=10)
    for attempt, full in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10), (5000, 10)):
        delays = [retry.backoff(worker.settings, attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
