"""The outbox page's queries on 1,000,000 settled events (PostgreSQL).

Run from the repository root (not part of ``make bench`` nor of the test suite)::

    .venv/bin/python -m benchmarks.web_queries                 # 1,000,000 settled events
    .venv/bin/python -m benchmarks.web_queries --events 200000 --repeat 7

Seeds, in a schema of its own (dropped at the end), with ``INSERT … SELECT
generate_series`` (a few seconds): ``--events`` settled events over the last two days
(5 signals), 5 % of them with a delivery row (a retry delivered later), 0.2 % dead, 500
failing (pending after an attempt) and 200 pending events (each row's ``event_id``
column filled as the write at commit fills it); then ``ANALYZE``. Then it times, with
the page's own functions (:mod:`signalbus.outbox.admin`,
:mod:`signalbus.outbox.browse`), each page's reads: wall time, median (and min–max) of
``--repeat`` runs after one warm-up. Nothing is asserted.

The PostgreSQL server is ``SIGNALBUS_BENCH_POSTGRES`` (else the test suite's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

import signalbus.outbox
from signalbus.outbox import admin, browse, sql

SCHEMA = "signalbus_bench_web"


def postgres_url() -> str:
    url = os.environ.get("SIGNALBUS_BENCH_POSTGRES") or os.environ.get(
        "SIGNALBUS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


SEED = [
    # settled events: done, over the last two days, ids in commit order
    """
    INSERT INTO signalbus_outbox (row_key, event_id, payload, state, created_at, settled_at)
    SELECT 'app.models:User#' || i, md5(i::text)::uuid::text,
           json_build_object('id', md5(i::text)::uuid::text, 'signal', 'signal_' || (i % 5),
                             'model', 'app.models:User', 'op', 'insert', 'pk', i,
                             'data', json_build_object('id', i, 'email', 'u' || i || '@example.com',
                                                       'plan', 'free'),
                             'changes', '{}'::json, 'source', 'orm',
                             'occurred_at', to_char(t AT TIME ZONE 'UTC',
                                                    'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')),
           'done', t, t + interval '20 milliseconds'
    FROM (SELECT i, now() - interval '2 days' * (1 - i::float / :n) AS t
          FROM generate_series(1, :n) AS i) AS s
    """,
    # dead events (unreadable rows): a few
    """
    UPDATE signalbus_outbox SET state = 'dead', last_error = 'outbox row cannot be delivered'
    WHERE id % 100003 = 0
    """,
    # 5 % with a delivery row: delivered later by a retry; 0.2 % dead
    """
    INSERT INTO signalbus_outbox_deliveries (outbox_id, event_id, receiver, signal, row_key,
        state, attempts, next_attempt_at, last_error, created_at, updated_at)
    SELECT id, payload->>'id', 'plugins.slack:post', payload->>'signal', row_key,
           CASE WHEN id % 500 = 0 THEN 'dead' ELSE 'delivered' END,
           CASE WHEN id % 500 = 0 THEN 10 ELSE 2 END, settled_at,
           CASE WHEN id % 500 = 0 THEN 'HTTPError: 500 from https://hooks.slack.com/…' END,
           settled_at, settled_at + interval '2 seconds'
    FROM signalbus_outbox WHERE id % 20 = 0
    """,
    # pending events (recent) and failing deliveries
    """
    INSERT INTO signalbus_outbox (row_key, event_id, payload, state, created_at)
    SELECT 'app.models:User#p' || i, md5('p' || i)::uuid::text,
           json_build_object('id', md5('p' || i)::uuid::text, 'signal', 'signal_1',
                             'model', 'app.models:User', 'op', 'insert', 'pk', i,
                             'data', '{}'::json, 'changes', '{}'::json,
                             'occurred_at', '2024-01-01T00:00:00+00:00'),
           'pending', now() - interval '30 seconds'
    FROM generate_series(1, 200) AS i
    """,
    """
    INSERT INTO signalbus_outbox_deliveries (outbox_id, event_id, receiver, signal, row_key,
        state, attempts, next_attempt_at, last_error, created_at, updated_at)
    SELECT id, payload->>'id', 'plugins.mail:welcome', payload->>'signal', row_key,
           'pending', 3, now() + interval '10 minutes', 'SMTPServerDisconnected: gone',
           settled_at, settled_at
    FROM signalbus_outbox WHERE state = 'done' AND id % 20 = 7 ORDER BY id DESC LIMIT 500
    """,
]


def seed(engine: Engine, events: int) -> float:
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in SEED:
            conn.execute(text(statement), {"n": events})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE signalbus_outbox"))
        conn.execute(text("VACUUM ANALYZE signalbus_outbox_deliveries"))
    return time.perf_counter() - started


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), min(runs), max(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    url = postgres_url()
    admin_engine = create_engine(url)
    with admin_engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    try:
        signalbus.outbox.create_all(engine)
        took = seed(engine, args.events)
        with engine.connect() as conn:
            counts = dict(conn.execute(text(
                "SELECT state, count(*) FROM signalbus_outbox GROUP BY state")).all())
            dcounts = dict(conn.execute(text(
                "SELECT state, count(*) FROM signalbus_outbox_deliveries GROUP BY state")).all())
            version = conn.execute(text("SHOW server_version")).scalar()
            some = conn.execute(text(
                "SELECT payload->>'id' FROM signalbus_outbox WHERE id = :i"),
                {"i": args.events // 2 + 1}).scalar_one()  # no delivery row: payload lookup
            tracked = conn.execute(text(
                "SELECT event_id FROM signalbus_outbox_deliveries WHERE state = 'dead' "
                "ORDER BY id LIMIT 1")).scalar_one()
        print(f"PostgreSQL {version}; seeded in {took:.1f}s: events {counts}, "
              f"deliveries {dcounts}")
        first = browse.problems(engine, dead=True, limit=50)
        deep: Any = None
        page = first
        for _ in range(20):  # the 21st page of dead deliveries
            if page["next"] is None:
                break
            deep = page["next"]
            page = browse.problems(engine, dead=True, limit=50, after=deep)
        def run(fn: Callable[[Any], Any]) -> Any:
            with engine.connect() as conn:
                return fn(conn)

        rows: list[tuple[str, Callable[[], Any]]] = [
            ("overview: browse.overview (the page's counts, oldest, latest dead)",
             lambda: browse.overview(engine)),
            ("overview: browse.throughput (per minute, last hour)",
             lambda: browse.throughput(engine, minutes=60)),
            ("overview: browse.per_receiver", lambda: browse.per_receiver(engine)),
            ("dead: first page (50)", lambda: browse.problems(engine, dead=True, limit=50)),
            ("dead: 21st page (keyset)",
             lambda: browse.problems(engine, dead=True, limit=50, after=deep)),
            ("failing: first page (50)", lambda: browse.problems(engine, dead=False, limit=50)),
            ("event: id with a delivery row", lambda: browse.event(engine, tracked)),
            ("event: id without one (never failed)", lambda: browse.event(engine, some)),
            ("event: unknown id", lambda: browse.event(engine, "no-such-id")),
            ("lag (metrics gauges, status --fail-if-lag)", lambda: browse.lag(engine)),
            ("status: admin.status (`signalbus status`: done estimated)",
             lambda: admin.status(engine, dead_limit=5)),
            ("for comparison: admin.status(exact=True) (`signalbus status --exact`)",
             lambda: admin.status(engine, dead_limit=5, exact=True)),
            ("status, chosen: events per state (sql.event_counts: pending, dead counted, "
             "done estimated)", lambda: run(sql.event_counts)),
            ("status, chosen: done per signal from a sample (sql.done_per_signal_estimate)",
             lambda: run(lambda c: sql.done_per_signal_estimate(c, 1_000_000))),
            ("status, alternative: events per state, one pass over the table (no payload)",
             lambda: run(lambda c: c.execute(text(
                 "SELECT state, count(*) FROM signalbus_outbox GROUP BY state")).all())),
            ("status, alternative: settled events counted on the settled index",
             lambda: run(lambda c: c.execute(text(
                 "SELECT count(*) FROM signalbus_outbox WHERE state <> 'pending'")).all())),
            ("status, alternative: done per signal counted (sql.done_per_signal)",
             lambda: run(sql.done_per_signal)),
        ]
        print(f"\n| query ({args.events:,} settled events) | median ms | min–max ms |")
        print("|---|---:|---:|")

        def report(label: str, fn: Callable[[], Any]) -> None:
            median, low, high = timed(fn, args.repeat)
            print(f"| {label} | {median:.1f} | {low:.1f}–{high:.1f} |", flush=True)

        for label, fn in rows:
            report(label, fn)
    finally:
        engine.dispose()
        with admin_engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        admin_engine.dispose()


if __name__ == "__main__":
    main()
