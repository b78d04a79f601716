"""The outbox worker on PostgreSQL: commit-to-receiver latency and one worker's rate.

Run from the repository root::

    .venv/bin/python -m benchmarks.outbox_worker            # defaults below
    .venv/bin/python -m benchmarks.outbox_worker --commits 500 --events 20000

* **Latency**: a :class:`signalbus.outbox.worker.Worker` runs in a thread, idle and
  ``LISTEN``\\ing, with a poll interval of a minute (so only the commit's ``NOTIFY`` can
  wake it in time). The main thread commits one row at a time and waits until its
  receiver has run; the latency is from the return of ``commit()`` to the start of the
  receiver. Reported: p50, p99, max over ``--commits`` commits.
* **Latency at a steady 200 events/s**: one row committed every 5 ms for
  ``--steady-seconds``, the worker LISTENing; p50, p99 from each commit to its receiver.
* **Raw limit**: the same number of rows claimed and deleted from a plain queue table
  with ``FOR UPDATE SKIP LOCKED`` in batches; the worker's rate is reported against it.
* **Rate**: ``--events`` events (inserts, ``--per-commit`` per transaction) are stored
  first, with three no-op receivers each; then one worker drains them
  (``run(once=True)``, batches of ``--batch``). Reported: events/s and deliveries/s.

The PostgreSQL server is ``SIGNALBUS_BENCH_POSTGRES`` (else the test suite's); the
benchmark works in a schema of its own, dropped at the end. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import threading
import time
from typing import Any

from sqlalchemy import String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event
from signalbus.outbox.worker import Worker

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = f"sb_bench_outbox_{os.getpid()}"


class Base(DeclarativeBase):
    pass


class Signup(Base):
    __tablename__ = "bench_outbox_signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


class Steady(Base):
    __tablename__ = "bench_outbox_steady"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


ARRIVED: queue.Queue[float] = queue.Queue()


def timed(sender: Any, event: Event, **kw: Any) -> None:
    """The latency run's receiver: notes when it ran."""
    ARRIVED.put(time.perf_counter())


def noop_a(sender: Any, event: Event, **kw: Any) -> None:
    """A receiver that does nothing (the rate run has three)."""


def noop_b(sender: Any, event: Event, **kw: Any) -> None:
    """A receiver that does nothing."""


def noop_c(sender: Any, event: Event, **kw: Any) -> None:
    """A receiver that does nothing."""


def percentile(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def measure_latency(Session: Any, commits: int) -> dict[str, float]:  # noqa: N803
    runtime = signalbus.SignalBus().attach(
        Session, config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False)
    runtime.connect("bench_signed_up", timed)
    worker = Worker(runtime, poll=60, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(0.5)  # LISTENing and idle
        latencies = []
        for i in range(commits):
            with Session() as s:
                s.add(Signup(email=f"latency{i}@example.com"))
                s.commit()
            committed = time.perf_counter()
            latencies.append((ARRIVED.get(timeout=30) - committed) * 1000)
    finally:
        worker.stop()
        thread.join()
    return {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies), "woken_by_notify": worker.stats.woken_by_notify,
            "woken_by_poll": worker.stats.woken_by_poll}


STEADY: dict[int, float] = {}


def steady_timed(sender: Any, event: Event, **kw: Any) -> None:
    """The steady-rate run's receiver: notes when each row's event arrived."""
    STEADY[int(event.pk)] = time.perf_counter()


def measure_steady_latency(Session: Any, per_second: int, seconds: float  # noqa: N803
                           ) -> dict[str, float]:
    """Commit one row every ``1 / per_second`` s for ``seconds``, a worker LISTENing in a
    thread; latency from each ``commit()``'s return to the start of its receiver."""
    runtime = signalbus.SignalBus().attach(
        Session, config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False)
    runtime.connect("bench_steady", steady_timed)
    worker = Worker(runtime, poll=60, handle_signals=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    committed: dict[int, float] = {}
    try:
        time.sleep(0.5)
        interval = 1.0 / per_second
        start = time.perf_counter()
        for i in range(int(per_second * seconds)):
            due = start + i * interval
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            with Session() as s:
                row = Steady(email=f"steady{i}@example.com")
                s.add(row)
                s.commit()
                committed[row.id] = time.perf_counter()
        achieved = len(committed) / (time.perf_counter() - start)
        deadline = time.perf_counter() + 30
        while len(STEADY) < len(committed) and time.perf_counter() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
        thread.join()
    latencies = [(STEADY[pk] - at) * 1000 for pk, at in committed.items() if pk in STEADY]
    return {"p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies), "samples": len(latencies),
            "lost": len(committed) - len(latencies), "achieved_per_s": achieved}


def measure_raw_claim(engine: Any, rows: int, batch: int) -> dict[str, float]:
    """The physical limit of this design here: claim and delete ``rows`` rows of a plain
    queue table in batches with ``FOR UPDATE SKIP LOCKED``, one transaction per batch."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_raw_queue (id bigserial PRIMARY KEY, "
                          "payload json NOT NULL)"))
        conn.execute(text("INSERT INTO bench_raw_queue (payload) SELECT "
                          "json_build_object('n', g) FROM generate_series(1, :n) AS g"),
                     {"n": rows})
        conn.execute(text("ANALYZE bench_raw_queue"))
    claim = text(
        "DELETE FROM bench_raw_queue WHERE id IN (SELECT id FROM bench_raw_queue ORDER BY id "
        "LIMIT :batch FOR UPDATE SKIP LOCKED) RETURNING id, payload")
    done = 0
    started = time.perf_counter()
    with engine.connect() as conn:
        while True:
            with conn.begin():
                got = conn.execute(claim, {"batch": batch}).all()
            if not got:
                break
            done += len(got)
    elapsed = time.perf_counter() - started
    return {"rows": done, "seconds": elapsed, "rows_per_s": done / elapsed}


def measure_rate(Session: Any, events: int, per_commit: int, batch: int  # noqa: N803
                 ) -> dict[str, float]:
    runtime = signalbus.SignalBus().attach(
        Session, config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False)
    for fn in (noop_a, noop_b, noop_c):
        runtime.connect("bench_signed_up", fn)
    started = time.perf_counter()
    for start in range(0, events, per_commit):
        with Session() as s:
            s.add_all(Signup(email=f"rate{i}@example.com")
                      for i in range(start, min(start + per_commit, events)))
            s.commit()
    stored = time.perf_counter() - started
    worker = Worker(runtime, batch=batch, handle_signals=False)
    started = time.perf_counter()
    stats = worker.run(once=True)
    elapsed = time.perf_counter() - started
    return {"events": events, "deliveries": stats.delivered, "seconds": elapsed,
            "events_per_s": events / elapsed, "deliveries_per_s": stats.delivered / elapsed,
            "store_events_per_s": events / stored}


def measure(url: str, commits: int, events: int, per_commit: int, batch: int,
            steady_seconds: float = 5.0) -> dict[str, dict[str, float]]:
    """Every measure in a schema of its own (dropped at the end)."""
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    try:
        Base.metadata.create_all(engine)
        signalbus.outbox.create_all(engine)
        signalbus.bind(Signup, "insert", "bench_signed_up")
        signalbus.bind(Steady, "insert", "bench_steady")
        return {
            "latency": measure_latency(sessionmaker(engine), commits),
            "steady": measure_steady_latency(sessionmaker(engine), 200, steady_seconds),
            "rate": measure_rate(sessionmaker(engine), events, per_commit, batch),
            "raw": measure_raw_claim(engine, events, batch),
        }
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        admin.dispose()


def run(context: Any) -> list[Any]:
    """The ``python -m benchmarks`` hook: the rows of this section (see
    ``benchmarks/context.py``)."""
    from benchmarks.report import Row

    rate_name = "one worker's delivery rate, 3 no-op receivers"
    latency_name = "commit-to-receiver latency through LISTEN/NOTIFY (p50)"
    if context.postgres_url is None:
        note = "not measured: PostgreSQL is not part of this run"
        return [Row("PostgreSQL", rate_name, note=note),
                Row("PostgreSQL", latency_name, note=note)]
    small = context.quick
    context.progress("outbox worker: latency and delivery rate")
    got = measure(context.postgres_url, 30 if small else 300, 1000 if small else 20000, 500,
                  100, steady_seconds=2.0 if small else 10.0)
    rate, raw, steady = got["rate"], got["raw"], got["steady"]
    share = rate["events_per_s"] / raw["rows_per_s"]
    p50, p99 = steady["p50_ms"], steady["p99_ms"]
    return [
        Row("PostgreSQL", rate_name, median=rate["events_per_s"], unit="events/s",
            against="raw claim-and-delete",
            target="≥ 20,000 events/s, or ≥ 1/3 of the raw rate",
            verdict="met" if rate["events_per_s"] >= 20000 or share >= 1 / 3 else "missed",
            note=f"{rate['deliveries_per_s']:.0f} deliveries/s; {share:.2f} of the raw "
                 f"claim-and-delete rate of the same run; batch 100"),
        Row("PostgreSQL", "raw claim-and-delete, FOR UPDATE SKIP LOCKED, batches of 100",
            median=raw["rows_per_s"], unit="rows/s",
            note=f"{raw['rows']} rows of a plain queue table: the physical limit here"),
        Row("PostgreSQL", latency_name + " at a steady 200 events/s", median=p50,
            unit="ms", target="p50 ≤ 5 ms, p99 ≤ 20 ms",
            verdict="met" if p50 <= 5 and p99 <= 20 else "missed",
            note=f"p99 {p99:.2f} ms, max {steady['max_ms']:.2f} ms; {steady['samples']} "
                 f"commits at {steady['achieved_per_s']:.0f}/s; {steady['lost']} late"),
        Row("PostgreSQL", latency_name + ", one commit at a time",
            median=got["latency"]["p50_ms"], unit="ms",
            note=f"p99 {got['latency']['p99_ms']:.2f} ms; an idle worker woken by each "
                 "commit's NOTIFY"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get(
        "SIGNALBUS_BENCH_POSTGRES", os.environ.get("SIGNALBUS_TEST_POSTGRES", POSTGRES_URL)))
    parser.add_argument("--commits", type=int, default=300, help="latency samples")
    parser.add_argument("--events", type=int, default=20000, help="events for the rate")
    parser.add_argument("--per-commit", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steady-seconds", type=float, default=10.0,
                        help="length of the 200 events/s latency run")
    args = parser.parse_args()

    print(f"PostgreSQL at {args.url.rpartition('@')[2]}, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f}")
    got = measure(args.url, args.commits, args.events, args.per_commit, args.batch,
                  steady_seconds=args.steady_seconds)
    lat, steady, rate, raw = got["latency"], got["steady"], got["rate"], got["raw"]
    print(f"commit-to-receiver latency over {args.commits} commits (LISTEN/NOTIFY): "
          f"p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max "
          f"{lat['max_ms']:.2f} ms (woken by notify {lat['woken_by_notify']}, "
          f"by poll {lat['woken_by_poll']})")
    print(f"at a steady {steady['achieved_per_s']:.0f} commits/s for {args.steady_seconds:g} s: "
          f"p50 {steady['p50_ms']:.2f} ms, p99 {steady['p99_ms']:.2f} ms, max "
          f"{steady['max_ms']:.2f} ms ({steady['samples']} samples, {steady['lost']} late)")
    print(f"one worker, 3 no-op receivers, batch {args.batch}: {rate['events']} events "
          f"({rate['deliveries']} deliveries) in {rate['seconds']:.2f} s = "
          f"{rate['events_per_s']:.0f} events/s, {rate['deliveries_per_s']:.0f} "
          f"deliveries/s (storing them: {rate['store_events_per_s']:.0f} events/s)")
    print(f"raw claim-and-delete of {raw['rows']} rows (SKIP LOCKED, batch {args.batch}): "
          f"{raw['rows_per_s']:.0f} rows/s; the worker does "
          f"{rate['events_per_s'] / raw['rows_per_s']:.2f} of it")

if __name__ == "__main__":
    main()
