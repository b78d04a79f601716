"""Candidate outbox storage shapes, measured side by side (PostgreSQL).

    SIGNALBUS_TEST_POSTGRES=postgresql+psycopg://... .venv/bin/python -m benchmarks.outbox_shapes

This is the measurement behind ``docs/outbox-design.md``. Each shape is what one
transaction of ``--batch`` ORM ``User`` inserts adds to the floor (the same inserts, no
outbox), written by hand with SQLAlchemy Core so that only the storage differs (the
capture layer's own cost is the same for all and measured by ``make bench``):

* ``floor``: the users only;
* ``json-row``: one JSON row per event, one ``executemany`` (the hand-written outbox);
* ``tx-row``: one row per transaction holding the JSON array of its events;
* ``event-row``: one row per event with the columns a worker claims by (row key, state
  with a server default, lease) and the two partial indexes of the claim: pending
  rows by id, and by (row key, id) for the per-row order check — the chosen shape;
* ``event+3``: the storage before: an events row and one deliveries row per receiver
  (3 receivers), two tables and their indexes.

Each transaction of every shape writes the same users into its own table; shapes are
interleaved batch by batch in a shuffled order; the ratios to the floor of the same run
are printed (median of the repeats, min–max). Then the worker side of the two main
shapes: claim a batch with ``FOR UPDATE SKIP LOCKED`` and settle it (rows/s), and
the same with the delivery rows of before.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .databases import postgres_url

SCHEMA = f"sb_shapes_{os.getpid()}"
PENDING = text("state = 'pending'")


class Base(DeclarativeBase):
    pass


def _user(name: str) -> type[Any]:
    return type(f"User_{name.replace('-', '_').replace('+', '_')}", (Base,), {
        "__tablename__": f"shape_user_{name.replace('-', '_').replace('+', '_')}",
        "id": mapped_column(Integer, primary_key=True),
        "email": mapped_column(String(200)),
        "name": mapped_column(String(100)),
        "is_active": mapped_column(default=True),
        "created_at": mapped_column(DateTime(timezone=True)),
        "__annotations__": {"is_active": Mapped[bool]},
    })


meta = MetaData()
json_row = Table("shape_json_row", meta,
                 Column("id", BigInteger, primary_key=True, autoincrement=True),
                 Column("payload", JSON, nullable=False))
tx_row = Table("shape_tx_row", meta,
               Column("id", BigInteger, primary_key=True, autoincrement=True),
               Column("events", JSON, nullable=False))
event_row = Table(
    "shape_event_row", meta,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("row_key", String(255)),
    Column("payload", JSON, nullable=False),
    Column("state", String(8), nullable=False, server_default="pending"),
    Column("claimed_until", DateTime(timezone=True)),
    Column("claimed_by", String(255)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("settled_at", DateTime(timezone=True)),
    Index("ix_shape_event_row_pending", "id", postgresql_where=PENDING),
    Index("ix_shape_event_row_row", "row_key", "id", postgresql_where=PENDING),
)
old_events = Table(
    "shape_old_events", meta,
    Column("id", String(36), primary_key=True),
    Column("signal", String(255), nullable=False), Column("model", String(255)),
    Column("op", String(16), nullable=False), Column("source", String(16), nullable=False),
    Column("pk", JSON), Column("row_key", String(255)), Column("payload", JSON, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_shape_old_events_signal", "signal", "occurred_at"),
    Index("ix_shape_old_events_created", "created_at"),
)
old_deliveries = Table(
    "shape_old_deliveries", meta,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False), Column("receiver", String(255), nullable=False),
    Column("signal", String(255), nullable=False), Column("row_key", String(255)),
    Column("state", String(16), nullable=False), Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True)), Column("claimed_by", String(255)),
    Column("last_error", Text), Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_shape_old_d_pending", "id", postgresql_where=PENDING),
    Index("ix_shape_old_d_row", "receiver", "row_key", "id", postgresql_where=PENDING),
    Index("ix_shape_old_d_uq", "event_id", "receiver", unique=True),
    Index("ix_shape_old_d_state", "state", "updated_at",
          postgresql_where=text("state <> 'pending'")),
)


def _payloads(users: list[Any], now: dt.datetime) -> list[dict[str, Any]]:
    out = []
    for u in users:
        out.append({
            "id": uuid.uuid4().hex, "signal": "user_registered", "model": "app:User",
            "op": "insert", "pk": u.id, "source": "orm", "context": {}, "changes": {},
            "data": {"id": u.id, "email": u.email, "name": u.name, "is_active": u.is_active,
                     "created_at": u.created_at.isoformat()},
            "occurred_at": now.isoformat(),
        })
    return out


def _write_json_row(conn: Connection, payloads: list[dict[str, Any]], now: dt.datetime) -> None:
    conn.execute(json_row.insert(), [{"payload": p} for p in payloads])


def _write_tx_row(conn: Connection, payloads: list[dict[str, Any]], now: dt.datetime) -> None:
    conn.execute(tx_row.insert(), {"events": payloads})


def _write_event_row(conn: Connection, payloads: list[dict[str, Any]], now: dt.datetime) -> None:
    conn.execute(event_row.insert(), [
        {"row_key": f"app:User#{p['pk']}", "payload": p} for p in payloads])


def _write_event_row_copy(conn: Connection, payloads: list[dict[str, Any]],
                          now: dt.datetime) -> None:
    raw: Any = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(
            "COPY shape_event_row (row_key, payload) FROM STDIN") as copy:
        for p in payloads:
            copy.write_row((f"app:User#{p['pk']}", json.dumps(p)))


def _write_old(conn: Connection, payloads: list[dict[str, Any]], now: dt.datetime) -> None:
    conn.execute(old_events.insert(), [
        {"id": p["id"], "signal": p["signal"], "model": p["model"], "op": p["op"],
         "source": "orm", "pk": p["pk"], "row_key": f"app:User#{p['pk']}", "payload": p,
         "occurred_at": now, "created_at": now} for p in payloads])
    conn.execute(old_deliveries.insert(), [
        {"event_id": p["id"], "receiver": f"app:r{n}", "signal": p["signal"],
         "row_key": f"app:User#{p['pk']}", "state": "pending", "attempts": 0,
         "next_attempt_at": now, "claimed_until": None, "claimed_by": None, "last_error": None,
         "created_at": now, "updated_at": now} for p in payloads for n in range(3)])


Writer = Callable[[Connection, list[dict[str, Any]], dt.datetime], None]
SHAPES: dict[str, Writer | None] = {
    "floor": None, "json-row": _write_json_row, "tx-row": _write_tx_row,
    "event-row": _write_event_row, "event-row-copy": _write_event_row_copy,
    "event+3": _write_old,
}


def measure_writes(engine: Any, rows: int, batch: int, repeats: int) -> dict[str, list[float]]:
    users = {name: _user(name) for name in SHAPES}
    Base.metadata.create_all(engine)
    meta.create_all(engine)
    ratios: dict[str, list[float]] = {name: [] for name in SHAPES}
    for repeat in range(repeats):
        with engine.begin() as conn:
            for t in [*meta.sorted_tables, *Base.metadata.sorted_tables]:
                conn.execute(t.delete())
        totals = dict.fromkeys(SHAPES, 0.0)
        for b in range(rows // batch):
            order = list(SHAPES)
            random.shuffle(order)
            for name in order:
                model, writer = users[name], SHAPES[name]
                now = dt.datetime.now(dt.UTC)
                t0 = time.perf_counter()
                with Session(engine) as session, session.begin():
                    objs = [model(email=f"user{b * batch + i}@example.com",
                                  name=f"User number {b * batch + i}", created_at=now)
                            for i in range(batch)]
                    session.add_all(objs)
                    session.flush()
                    if writer is not None:
                        writer(session.connection(), _payloads(objs, now), now)
                totals[name] += time.perf_counter() - t0
        for name in SHAPES:
            ratios[name].append(totals[name] / totals["floor"])
        print(f"repeat {repeat + 1}: " + ", ".join(
            f"{n} {totals[n] / totals['floor']:.3f}x" for n in SHAPES), flush=True)
    return ratios


def measure_claims(engine: Any, rows: int, batch: int) -> dict[str, float]:
    """rows/s of claim (SKIP LOCKED, lease) + settle of the stored rows, batch by batch."""
    out: dict[str, float] = {}
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    claim_event = text(f"""
        UPDATE {SCHEMA}.shape_event_row o SET claimed_until = now() + interval '60 s',
               claimed_by = 'w'
        WHERE o.id IN (
          SELECT e.id FROM {SCHEMA}.shape_event_row e
          WHERE e.state = 'pending' AND (e.claimed_until IS NULL OR e.claimed_until <= now())
            AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.shape_event_row x WHERE x.state = 'pending'
                            AND x.row_key = e.row_key AND x.id < e.id)
          ORDER BY e.id LIMIT :batch FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.payload""")
    settle_event = text(f"UPDATE {SCHEMA}.shape_event_row SET state = 'done', "
                        "settled_at = now() WHERE id = ANY(:ids)")
    claim_old = text(f"""
        UPDATE {SCHEMA}.shape_old_deliveries o SET claimed_until = now() + interval '60 s',
               claimed_by = 'w'
        WHERE o.id IN (
          SELECT d.id FROM {SCHEMA}.shape_old_deliveries d
          WHERE d.state = 'pending' AND (d.claimed_until IS NULL OR d.claimed_until <= now())
            AND NOT EXISTS (SELECT 1 FROM {SCHEMA}.shape_old_deliveries x
                            WHERE x.state = 'pending' AND x.receiver = d.receiver
                            AND x.row_key = d.row_key AND x.id < d.id)
          ORDER BY d.id LIMIT :batch FOR UPDATE SKIP LOCKED)
        RETURNING o.id, o.event_id""")
    payload_old = text(f"SELECT id, payload FROM {SCHEMA}.shape_old_events WHERE id = ANY(:ids)")
    settle_old = text(f"UPDATE {SCHEMA}.shape_old_deliveries SET state = 'delivered', "
                      "updated_at = now(), claimed_until = NULL, claimed_by = NULL "
                      "WHERE id = ANY(:ids)")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("SET synchronous_commit TO off")
        for name, claim, settle, payload in (
                ("event-row", claim_event, settle_event, None),
                ("event+3", claim_old, settle_old, payload_old)):
            done = 0
            t0 = time.perf_counter()
            while True:
                got = conn.execute(claim, {"batch": batch}).all()
                if not got:
                    break
                if payload is not None:
                    conn.execute(payload, {"ids": list({r[1] for r in got})}).all()
                conn.execute(settle, {"ids": [r[0] for r in got]})
                done += len(got)
            elapsed = time.perf_counter() - t0
            events = done if name == "event-row" else done / 3
            out[name] = events / elapsed
            print(f"claim+settle {name}: {done} rows, {events / elapsed:,.0f} events/s", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    engine = create_engine(postgres_url())
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {SCHEMA}")
    engine = create_engine(postgres_url(),
                           connect_args={"options": f"-c search_path={SCHEMA}"})
    try:
        ratios = measure_writes(engine, args.rows, args.batch, args.repeats)
        print(f"\nwrite cost, {args.rows} inserts in transactions of {args.batch}, "
              f"{args.repeats} repeats (ratio to the floor of the same run):")
        for name, values in ratios.items():
            print(f"  {name:10} {statistics.median(values):.3f}x "
                  f"({min(values):.3f}-{max(values):.3f})")
        print()
        measure_claims(engine, args.rows, args.batch)
    finally:
        engine.dispose()
        with create_engine(postgres_url()).begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {SCHEMA} CASCADE")
    print(json.dumps({"note": "figures above; not stored"}))


if __name__ == "__main__":
    main()
