"""PostgreSQL LISTEN/NOTIFY wakes the worker at commit; polling covers a missed notification."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import String
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event
from signalbus.bus import Runtime
from signalbus.outbox.worker import Worker

log = logging.getLogger(__name__)

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class Base(DeclarativeBase):
    pass


class Ping(Base):
    __tablename__ = "ob_notify_pings"
    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str] = mapped_column(String(50))


CHANNELS = itertools.count()
ARRIVED: queue.Queue[tuple[float, Event]] = queue.Queue()


def arrive(sender: Any, event: Event, **kw: Any) -> None:
    ARRIVED.put((time.perf_counter(), event))


@pytest.fixture
def tables(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    while not ARRIVED.empty():
        ARRIVED.get_nowait()
    yield engine
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


def make_runtime(engine: Engine, **config: Any) -> Runtime:
    signalbus.bind(Ping, "insert", "ob_pinged")
    # channels are per database, not per schema: one of its own, so that other tests
    # (and parallel runs) committing to the same database do not wake this worker
    channel = f"sb_test_{os.getpid()}_{next(CHANNELS)}"
    rt = signalbus.SignalBus().attach(sessionmaker(engine), plugins=False, config={
        "SIGNALBUS_DELIVERY": "outbox", "SIGNALBUS_OUTBOX_CHANNEL": channel, **config})
    rt.connect("ob_pinged", arrive)
    return rt


class Running:
    """A worker running in a thread for the duration of a ``with`` block."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run)

    def __enter__(self) -> Worker:
        self.thread.start()
        return self.worker

    def __exit__(self, *exc: Any) -> None:
        self.worker.stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_notify_wakes_the_worker_within_the_commit(tables, record_property):
    runtime = make_runtime(tables)
    # a poll interval far longer than the test: only a notification can wake it in time
    worker = Worker(runtime, poll=60)
    latencies = []
    with Running(worker):
        time.sleep(0.3)  # let it LISTEN and go idle
        for i in range(30):
            with runtime.session_factory() as s:
                s.add(Ping(note=f"ping {i}"))
                s.commit()
            committed = time.perf_counter()
            arrived, event = ARRIVED.get(timeout=20)
            assert event.data["note"] == f"ping {i}"
            latencies.append((arrived - committed) * 1000)
    assert worker.stats.delivered == 30
    assert worker.stats.woken_by_notify >= 1
    assert worker.stats.woken_by_poll == 0
    p50 = statistics.median(latencies)
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    log.info("commit-to-receiver latency through LISTEN/NOTIFY over %d commits: p50 %.2f ms, "
             "p99 %.2f ms, max %.2f ms", len(latencies), p50, p99, max(latencies))
    record_property("notify_latency_p50_ms", round(p50, 3))
    record_property("notify_latency_p99_ms", round(p99, 3))


def test_a_missed_notification_is_covered_by_polling(tables):
    # the writer sends no NOTIFY: the listening worker must find the event by polling
    runtime = make_runtime(tables, SIGNALBUS_OUTBOX_NOTIFY=False)
    worker = Worker(runtime, poll=0.2)
    assert worker.listen
    with Running(worker):
        time.sleep(0.3)
        with runtime.session_factory() as s:
            s.add(Ping(note="quiet"))
            s.commit()
        _, event = ARRIVED.get(timeout=20)
    assert event.data["note"] == "quiet"
    assert worker.stats.woken_by_notify == 0
    assert worker.stats.woken_by_poll >= 1


def test_stop_interrupts_an_idle_listening_worker(tables):
    worker = Worker(make_runtime(tables), poll=60)
    running = Running(worker)
    with running:
        time.sleep(0.3)
        started = time.monotonic()
        worker.stop()
        running.thread.join(10)
        assert time.monotonic() - started < 5  # not the 60 s poll
