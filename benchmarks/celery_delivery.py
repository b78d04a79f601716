"""Celery mode on PostgreSQL and Redis: delivery rate and commit-to-receiver latency,
against the outbox worker of the same run; and the two ways of keeping per-row order.

Run from the repository root::

    .venv/bin/python -m benchmarks.celery_delivery            # defaults below
    .venv/bin/python -m benchmarks.celery_delivery --events 2000 --steady-seconds 10

Every process is real: ``celery worker`` processes (prefork, one child each, ``-O
fair``) on Redis database ``--redis-db``, a ``signalbus relay`` process, and committing
code in this process. One no-op receiver per event (so a delivery is a task).

* **Rate**: ``--events`` events are stored first (nothing running); then the workers
  are started, then the relay, and the time from the relay's start to the last
  delivery recorded in the outbox gives events/s, with 1 and with 2 worker processes.
  The outbox worker drains the same number of events in the same run
  (:class:`signalbus.outbox.worker.Worker`, in this process) for comparison.
* **Latency at a steady 200 events/s**: relay and 2 workers running; one row committed
  every 5 ms for ``--steady-seconds``; the receiver notes the wall-clock time it ran;
  p50/p99 from the return of each ``commit()``.
* **Order**: ``--rows`` rows updated ``--versions`` times each (commit per version),
  2 workers. *head*: the relay as shipped (a delivery is handed over only when it heads
  its (row, receiver) chain). *route*: every delivery handed over at once, routed by a
  hash of its row to one of two queues, each consumed by one worker with one child (FIFO
  per queue). Reported: time to deliver everything and deliveries out of order.

The PostgreSQL server is ``SIGNALBUS_BENCH_POSTGRES`` (else the test suite's); the
benchmark works in a schema of its own, dropped at the end. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SCHEMA = f"sb_bench_celery_{os.getpid()}"

APP = '''
import json, os, time

from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus

engine = create_engine(os.environ["BENCH_URL"], pool_size=2,
                       connect_args={"options": "-csearch_path=" + os.environ["BENCH_SCHEMA"]})


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bench_celery_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(default=0)
    note: Mapped[str] = mapped_column(String(50), default="")


signalbus.bind(Row, "insert", "bench_celery_saved")
signalbus.bind(Row, "update", "bench_celery_saved")
OUT = os.open(os.environ["BENCH_RECEIVED"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def noted(sender, event, **kw):
    line = [event.id, event.pk, event.data["version"], time.time()]
    os.write(OUT, (json.dumps(line) + "\\n").encode())


def make(delivery="celery"):
    bus = signalbus.SignalBus()
    config = {"SIGNALBUS_DELIVERY": delivery,
              "SIGNALBUS_CELERY_BROKER": os.environ["BENCH_BROKER"],
              "SIGNALBUS_CELERY_QUEUE": os.environ["BENCH_QUEUE"],
              "SIGNALBUS_CELERY_LEASE": "120",
              "SIGNALBUS_OUTBOX_POLL": "0.5"}
    runtime = bus.attach(sessionmaker(engine), config=config, plugins=False)
    runtime.connect("bench_celery_saved", noted, name="bench:noted")
    return bus
'''

WORKER = '''
import bench_celery_app, signalbus.celery
celery = signalbus.celery.init_celery(bench_celery_app.make())
'''


def percentile(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, url: str, redis_db: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sb-bench-celery-"))
        (self.dir / "bench_celery_app.py").write_text(APP)
        (self.dir / "bench_celery_worker.py").write_text(WORKER)
        self.received = self.dir / "received.jsonl"
        self.redis_db = redis_db
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONPATH": os.pathsep.join([str(self.dir), self.env.get("PYTHONPATH", "")]),
            "BENCH_URL": url, "BENCH_SCHEMA": SCHEMA,
            "BENCH_BROKER": f"redis://127.0.0.1:6379/{redis_db}",
            "BENCH_QUEUE": "signalbus_bench", "BENCH_RECEIVED": str(self.received)})
        self.env.pop("SIGNALBUS_MUTED", None)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("BENCH_")})
        sys.path.insert(0, str(self.dir))
        self.admin = create_engine(url)
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
        import bench_celery_app  # noqa: F401 - the model and its bindings, in this process

        import signalbus.outbox

        self.app = sys.modules["bench_celery_app"]
        self.app.Base.metadata.create_all(self.app.engine)
        signalbus.outbox.create_all(self.app.engine)
        self.procs: list[subprocess.Popen[bytes]] = []

    # processes ------------------------------------------------------------------------

    def flush_redis(self) -> None:
        subprocess.run(["redis-cli", "-n", str(self.redis_db), "flushdb"], check=True,
                       capture_output=True)

    def worker(self, name: str, queue: str = "signalbus_bench") -> subprocess.Popen[bytes]:
        log = self.dir / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "bench_celery_worker:celery", "worker",
                 "-Q", queue, "--pool=prefork", "--concurrency=1", "-O", "fair",
                 "--without-heartbeat", "--without-gossip", "--without-mingle",
                 "-n", f"{name}@%h", "--loglevel=WARNING"],
                env=self.env, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait_ready(self, procs: list[subprocess.Popen[bytes]]) -> None:
        # a worker is ready when it answers a ping through the broker
        import signalbus.celery

        celery = signalbus.celery.init_celery(self.app.make())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            replies = celery.control.ping(timeout=0.5) or []
            if len(replies) >= len(procs):
                return
        raise RuntimeError(f"workers not ready; see {self.dir}")

    def relay(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.dir / "relay.log").open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "signalbus", "relay", "--app",
                 "bench_celery_app:make", "--log-level", "WARNING", *args],
                env=self.env, cwd=self.dir, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def reset(self) -> None:
        self.stop_all()
        self.flush_redis()
        with self.app.engine.begin() as conn:
            conn.execute(text("TRUNCATE signalbus_outbox_deliveries, signalbus_outbox, "
                              "bench_celery_rows RESTART IDENTITY"))
        self.received.write_text("")

    def close(self) -> None:
        self.stop_all()
        self.flush_redis()
        self.app.engine.dispose()
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        self.admin.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    # workloads ------------------------------------------------------------------------

    def session(self, delivery: str = "celery") -> Any:
        """A session of a new bus of that delivery mode (one bus per session factory)."""
        return self.app.make(delivery).runtime().session_factory()

    def store(self, events: int, delivery: str = "celery") -> None:
        with self.session(delivery) as s:
            for start in range(0, events, 500):
                s.add_all(self.app.Row() for _ in range(min(500, events - start)))
                s.commit()

    def count(self, sql: str) -> int:
        with self.app.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def wait_delivered(self, n: int, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count("SELECT count(*) FROM signalbus_outbox_deliveries "
                          "WHERE state = 'delivered'") >= n:
                return time.perf_counter()
            time.sleep(0.05)
        raise RuntimeError(f"{n} deliveries not made in {timeout}s; see {self.dir}")

    def celery_rate(self, events: int, workers: int) -> dict[str, float]:
        self.reset()
        self.store(events)
        procs = [self.worker(f"rate{i}") for i in range(workers)]
        self.wait_ready(procs)
        started = time.perf_counter()
        self.relay()
        ended = self.wait_delivered(events)
        seconds = ended - started
        return {"events": events, "seconds": seconds, "events_per_s": events / seconds}

    def outbox_rate(self, events: int) -> dict[str, float]:
        from signalbus.outbox.worker import Worker

        self.reset()
        self.store(events, "outbox")
        bus = self.app.make("outbox")
        worker = Worker(bus.runtime(), handle_signals=False, listen=False)
        started = time.perf_counter()
        worker.run(once=True)
        seconds = time.perf_counter() - started
        return {"events": events, "seconds": seconds, "events_per_s": events / seconds}

    def steady(self, per_second: int, seconds: float) -> dict[str, float]:
        self.reset()
        procs = [self.worker(f"steady{i}") for i in range(2)]
        self.wait_ready(procs)
        self.relay()
        time.sleep(1.0)
        committed: dict[str, float] = {}
        period = 1.0 / per_second
        n = int(per_second * seconds)
        started = time.perf_counter()
        with self.session() as s:
            for i in range(n):
                target = started + i * period
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                row = self.app.Row()
                s.add(row)
                s.commit()
                committed[str(row.id)] = time.time()
        achieved = n / (time.perf_counter() - started)
        self.wait_delivered(n, timeout=120)
        arrived = {}
        for line in self.received.read_text().splitlines():
            _, pk, _, at = json.loads(line)
            arrived.setdefault(str(pk), at)
        latencies = [(arrived[k] - committed[k]) * 1000 for k in committed if k in arrived]
        return {"samples": len(latencies), "achieved_per_s": achieved,
                "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies), "mean_ms": statistics.fmean(latencies)}

    def versions(self, rows: int, versions: int) -> int:
        with self.session() as s:
            s.add_all(self.app.Row() for _ in range(rows))
            s.commit()
            for v in range(1, versions):
                for row in s.query(self.app.Row):
                    row.version = v
                s.commit()
        return rows * versions

    def out_of_order(self) -> int:
        last: dict[Any, int] = {}
        bad = 0
        for line in self.received.read_text().splitlines():
            _, pk, version, _ = json.loads(line)
            if version < last.get(pk, -1):
                bad += 1
            last[pk] = max(version, last.get(pk, -1))
        return bad

    def order_head(self, rows: int, versions: int) -> dict[str, float]:
        self.reset()
        n = self.versions(rows, versions)
        procs = [self.worker(f"head{i}") for i in range(2)]
        self.wait_ready(procs)
        started = time.perf_counter()
        self.relay()
        seconds = self.wait_delivered(n) - started
        return {"deliveries": n, "seconds": seconds, "out_of_order": self.out_of_order()}

    def order_route(self, rows: int, versions: int) -> dict[str, float]:
        """Per-key routing, built small here: every delivery handed over at once, to the
        queue of its row's hash."""
        import signalbus.celery
        from signalbus.outbox import sql

        self.reset()
        n = self.versions(rows, versions)
        procs = [self.worker(f"route{i}", queue=f"signalbus_bench.{i}") for i in range(2)]
        self.wait_ready(procs)
        bus = self.app.make()
        relay = signalbus.celery.Relay(bus.runtime(), celery=signalbus.celery.init_celery(bus),
                                       handle_signals=False, listen=False)
        started = time.perf_counter()
        from signalbus.outbox.settings import utcnow

        while relay.expand(utcnow()):
            pass
        token = "celery:route"
        with self.app.engine.begin() as conn:
            claimed = conn.execute(text(
                "UPDATE signalbus_outbox_deliveries SET claimed_by = :t, claimed_until = "
                "now() + interval '120 seconds' WHERE state = 'pending' "
                "RETURNING id, row_key, attempts"), {"t": token}).all()
        assert sql.HANDOVER_PREFIX in token
        with relay.celery.producer_or_acquire() as producer:
            for row in sorted(claimed, key=lambda r: r.id):
                queue = f"signalbus_bench.{zlib.crc32(row.row_key.encode()) % 2}"
                relay.celery.send_task("signalbus.deliver", args=(row.id, token,
                                                                  row.attempts + 1),
                                       queue=queue, producer=producer)
        seconds = self.wait_delivered(n) - started
        return {"deliveries": n, "seconds": seconds, "out_of_order": self.out_of_order()}


def measure(url: str, redis_db: int, events: int, steady_seconds: float, rows: int,
            versions: int) -> dict[str, Any]:
    bench = Bench(url, redis_db)
    try:
        return {
            "outbox": bench.outbox_rate(events),
            "celery1": bench.celery_rate(events, 1),
            "celery2": bench.celery_rate(events, 2),
            "steady": bench.steady(200, steady_seconds),
            "head": bench.order_head(rows, versions),
            "route": bench.order_route(rows, versions),
        }
    finally:
        bench.close()


def run(context: Any) -> list[Any]:
    """The ``python -m benchmarks`` hook: the rows of this section."""
    from benchmarks.report import Row

    names = ["celery mode: delivery rate, 1 worker process", "celery mode: delivery rate, "
             "2 worker processes", "celery mode: commit-to-receiver latency at 200 events/s"]
    if context.postgres_url is None:
        return [Row("PostgreSQL + Redis", name, note="not measured: PostgreSQL is not part "
                    "of this run") for name in names]
    context.progress("celery mode: rate, latency, order")
    small = context.quick
    got = measure(context.postgres_url, int(os.environ.get("SIGNALBUS_BENCH_REDIS_DB", "8")),
                  200 if small else 1000, 2.0 if small else 10.0, 5, 4 if small else 10)
    outbox = got["outbox"]["events_per_s"]
    rows = []
    for key, name in (("celery1", names[0]), ("celery2", names[1])):
        rate = got[key]["events_per_s"]
        rows.append(Row("PostgreSQL + Redis", name, median=rate, unit="events/s",
                        against="outbox worker, same run",
                        note=f"{rate / outbox:.3f} of the outbox worker's {outbox:.0f} "
                             f"events/s; 1 no-op receiver; {got[key]['events']} events"))
    steady = got["steady"]
    rows.append(Row("PostgreSQL + Redis", names[2], median=steady["p50_ms"], unit="ms",
                    note=f"p99 {steady['p99_ms']:.1f} ms, max {steady['max_ms']:.1f} ms; "
                         f"{steady['samples']} commits at {steady['achieved_per_s']:.0f}/s; "
                         "relay + 2 workers"))
    for key in ("head", "route"):
        r = got[key]
        rows.append(Row("PostgreSQL + Redis", f"celery mode, per-row order by {key}",
                        median=r["deliveries"] / r["seconds"], unit="deliveries/s",
                        note=f"{r['out_of_order']} delivered out of order"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get(
        "SIGNALBUS_BENCH_POSTGRES", os.environ.get("SIGNALBUS_TEST_POSTGRES", POSTGRES_URL)))
    parser.add_argument("--redis-db", type=int, default=8)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--steady-seconds", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--versions", type=int, default=10)
    args = parser.parse_args()
    print(f"PostgreSQL at {args.url.rpartition('@')[2]}, Redis db {args.redis_db}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    got = measure(args.url, args.redis_db, args.events, args.steady_seconds, args.rows,
                  args.versions)
    outbox = got["outbox"]
    print(f"outbox worker (in-process, 1 no-op receiver): {outbox['events']} events in "
          f"{outbox['seconds']:.2f} s = {outbox['events_per_s']:.0f} events/s")
    for key, label in (("celery1", "1 worker process"), ("celery2", "2 worker processes")):
        r = got[key]
        print(f"celery, {label}: {r['events']} events in {r['seconds']:.2f} s = "
              f"{r['events_per_s']:.0f} events/s ({r['events_per_s'] / outbox['events_per_s']:.3f}"
              f" of the outbox worker)")
    s = got["steady"]
    print(f"celery, commit-to-receiver at a steady {s['achieved_per_s']:.0f} events/s "
          f"({s['samples']} commits, relay + 2 workers): p50 {s['p50_ms']:.1f} ms, "
          f"p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms")
    for key in ("head", "route"):
        r = got[key]
        print(f"per-row order by {key}: {r['deliveries']} deliveries of {args.rows} rows in "
              f"{r['seconds']:.2f} s = {r['deliveries'] / r['seconds']:.0f}/s, "
              f"{r['out_of_order']} out of order")


if __name__ == "__main__":
    main()
