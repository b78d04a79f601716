"""Finding an event by id: candidate shapes side by side, in one run (PostgreSQL).

Run from the repository root (not part of ``make bench`` nor of the test suite)::

    .venv/bin/python -m benchmarks.event_lookup                       # 1,000,000 rows
    .venv/bin/python -m benchmarks.event_lookup --events 200000 --write-repeats 3

The shapes (each on top of the outbox table without any lookup index):

* ``none``: nothing (the lookup scans the payloads);
* ``btree-expr``: ``CREATE INDEX … ((payload->>'id'))``;
* ``hash-expr``: ``CREATE INDEX … USING hash ((payload->>'id'))``;
* ``column``: an ``event_id`` column written at commit (the ``COPY`` names it) with a
  btree index of its own;
* ``column-hash``: the same column with a hash index.

1. **Write cost at commit**: every shape has a table of its own (its own schema); a
   repeat times ``--write-rows`` events stored in transactions of ``--batch`` the way
   :func:`signalbus.outbox.sql.insert_events` stores them on psycopg 3 (one ``COPY`` per
   transaction, payloads shaped like ``Event.to_dict()``), the shapes interleaved batch
   by batch in a shuffled order, each table emptied before the repeat. Printed: the
   ratio of each shape's time to ``none``'s in the same repeat (median, min–max).
2. **Lookup on ``--events`` rows**: one table seeded by ``benchmarks.web_queries``
   (settled events, their ``event_id`` column filled), then for each shape
   in turn: build its index (timed), ``ANALYZE``, the index's size, the lookup of an id
   half-way through the table and of an unknown id (median of ``--repeat`` runs after a
   warm-up, min–max; the statement as :func:`~signalbus.outbox.sql.find_event` runs it,
   through the driver, prepared after 5 runs as psycopg does), the index the plan uses;
   then drop the index.

Nothing is asserted. The server is ``SIGNALBUS_BENCH_POSTGRES`` (else the test suite's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

import signalbus.outbox

from .web_queries import postgres_url, seed

SCHEMA = "signalbus_bench_lookup"

SHAPES: dict[str, list[str]] = {
    "none": [],
    "btree-expr": ["CREATE INDEX bench_lookup ON signalbus_outbox ((payload->>'id'))"],
    "hash-expr": ["CREATE INDEX bench_lookup ON signalbus_outbox USING hash "
                  "((payload->>'id'))"],
    "column": ["CREATE INDEX bench_lookup ON signalbus_outbox (event_id)"],
    "column-hash": ["CREATE INDEX bench_lookup ON signalbus_outbox USING hash (event_id)"],
}

# the lookup, as the shape would run it (newest first for the payload)
LOOKUP = {
    "payload": ("SELECT id, state FROM signalbus_outbox WHERE payload->>'id' = %s "
                "ORDER BY id DESC LIMIT 1"),
    "column": ("SELECT id, state FROM signalbus_outbox WHERE event_id = %s "
               "ORDER BY id DESC LIMIT 1"),
}


def baseline(engine: Engine) -> None:
    """The outbox tables of this signalbus with no lookup index and an ``event_id``
    column (nullable) that only the ``column`` shape fills."""
    signalbus.outbox.create_all(engine)
    with engine.begin() as conn:
        for name in index_names(engine):
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text("ALTER TABLE signalbus_outbox ADD COLUMN IF NOT EXISTS "
                          "event_id varchar(36)"))


def index_names(engine: Engine) -> list[str]:
    """This signalbus's own index on the event id, if its schema has one."""
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND "
            "tablename = 'signalbus_outbox' AND (indexdef LIKE '%event_id%' OR "
            "indexdef LIKE '%''id''%')")).scalars())


def payload(i: int) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "signal": "user_registered", "model": "app.models:User",
            "op": "insert", "pk": i, "source": "orm",
            "data": {"id": i, "email": f"user{i}@example.com", "name": f"User {i}",
                     "is_active": True, "created_at": "2026-11-30T07:00:00+00:00"},
            "changes": {}, "context": {},
            "occurred_at": dt.datetime.now(dt.UTC).isoformat()}


def write_cost(url: str, rows: int, batch: int, repeats: int) -> dict[str, list[float]]:
    engines = {name: create_engine(url, connect_args={
        "options": f"-csearch_path={SCHEMA}_{name.replace('-', '_')}"}) for name in SHAPES}
    for name, engine in engines.items():
        baseline(engine)
        with engine.begin() as conn:
            for statement in SHAPES[name]:
                conn.execute(text(statement))
    ratios: dict[str, list[float]] = {name: [] for name in SHAPES}
    order = list(SHAPES)
    try:
        for repeat in range(repeats + 1):  # the first is a warm-up
            totals = dict.fromkeys(SHAPES, 0.0)
            for engine in engines.values():
                with engine.begin() as conn:
                    conn.execute(text("TRUNCATE signalbus_outbox CASCADE"))
            for start in range(0, rows, batch):
                random.shuffle(order)
                for name in order:
                    items = [payload(i) for i in range(start, start + batch)]
                    column = name.startswith("column")
                    started = time.perf_counter()
                    with engines[name].begin() as conn:
                        raw: Any = conn.connection.driver_connection
                        columns = "row_key, payload, event_id" if column else "row_key, payload"
                        with raw.cursor() as cursor, cursor.copy(
                                f"COPY signalbus_outbox ({columns}) FROM STDIN") as copy:
                            for i, p in zip(range(start, start + batch), items, strict=True):
                                values: tuple[Any, ...] = (f"app.models:User#{i}", json.dumps(p))
                                copy.write_row(values + (p["id"],) if column else values)
                    totals[name] += time.perf_counter() - started
            if repeat:
                for name in SHAPES:
                    ratios[name].append(totals[name] / totals["none"])
    finally:
        for engine in engines.values():
            engine.dispose()
    return ratios


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    for _ in range(6):  # warm-up, and past psycopg's prepare threshold (5)
        fn()
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return statistics.median(runs), min(runs), max(runs)


def lookups(engine: Engine, events: int, repeat: int) -> list[str]:
    took = seed(engine, events)  # fills event_id too
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE signalbus_outbox"))
        some = conn.execute(text("SELECT event_id FROM signalbus_outbox WHERE id = :i"),
                            {"i": events // 2 + 1}).scalar_one()
        heap = conn.execute(text(
            "SELECT pg_relation_size('signalbus_outbox')")).scalar_one()
    lines = [f"seeded {events:,} events in {took:.1f} s; table {heap / 2**20:.0f} MiB",
             "", "| shape | build s | index MiB | lookup half-way, median ms (min–max) | "
             "unknown id, median ms (min–max) | plan |", "|---|---:|---:|---:|---:|---|"]
    raw: Any = engine.raw_connection()
    try:
        psycopg = raw.driver_connection
        for name, statements in SHAPES.items():
            started = time.perf_counter()
            with engine.begin() as conn:
                for statement in statements:
                    conn.execute(text(statement))
                conn.execute(text("ANALYZE signalbus_outbox"))
            build = time.perf_counter() - started
            with engine.connect() as conn:
                size = conn.execute(text(
                    "SELECT coalesce(pg_relation_size(to_regclass('bench_lookup')), 0)")
                ).scalar_one()
            query = LOOKUP["column" if name.startswith("column") else "payload"]
            psycopg.rollback()

            def find(event_id: str, query: str = query) -> Any:
                with psycopg.cursor() as cursor:
                    return cursor.execute(query, (event_id,)).fetchone()

            hit = timed(lambda: find(some), repeat)
            miss = timed(lambda: find("no-such-id"), repeat)
            with psycopg.cursor() as cursor:
                plan = next(r[0].strip().split("  (")[0].lstrip("-> ") for r in cursor.execute(
                    "EXPLAIN " + query.replace("%s", "'x'")).fetchall() if "Scan" in r[0])
            psycopg.rollback()
            lines.append(
                f"| {name} | {build:.1f} | {size / 2**20:.1f} | {hit[0]:.2f} "
                f"({hit[1]:.2f}–{hit[2]:.2f}) | {miss[0]:.2f} ({miss[1]:.2f}–{miss[2]:.2f}) "
                f"| {plan} |")
            with engine.begin() as conn:
                conn.execute(text("DROP INDEX IF EXISTS bench_lookup"))
    finally:
        raw.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7, help="lookups per figure")
    parser.add_argument("--write-rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--write-repeats", type=int, default=5)
    parser.add_argument("--skip-lookup", action="store_true")
    parser.add_argument("--skip-write", action="store_true")
    args = parser.parse_args()

    url = postgres_url()
    admin = create_engine(url)
    schemas = [SCHEMA] + [f"{SCHEMA}_{n.replace('-', '_')}" for n in SHAPES]

    def reset(create: bool) -> None:
        with admin.begin() as conn:
            for name in schemas:
                conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
                if create:
                    conn.execute(text(f"CREATE SCHEMA {name}"))

    reset(True)
    try:
        with admin.connect() as conn:
            print(f"PostgreSQL {conn.execute(text('SHOW server_version')).scalar()}")
        if not args.skip_write:
            ratios = write_cost(url, args.write_rows, args.batch, args.write_repeats)
            print(f"\nwrite cost: {args.write_rows:,} events in transactions of {args.batch} "
                  f"(one COPY each), {args.write_repeats} interleaved repeats\n")
            print("| shape | time / none's, median (min–max) |\n|---|---:|")
            for name, values in ratios.items():
                print(f"| {name} | {statistics.median(values):.3f} "
                      f"({min(values):.3f}–{max(values):.3f}) |", flush=True)
        if not args.skip_lookup:
            engine = create_engine(url, connect_args={"options": f"-csearch_path={SCHEMA}"})
            try:
                baseline(engine)
                print()
                print("\n".join(lookups(engine, args.events, args.repeat)), flush=True)
            finally:
                engine.dispose()
    finally:
        reset(False)
        admin.dispose()


if __name__ == "__main__":
    main()
