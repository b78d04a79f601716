"""Trigger capture's write cost against the floor (PostgreSQL).

Two tables of the same shape in a schema of their own: one without triggers (the floor),
one captured by signalbus's generated triggers (``bind(..., capture="trigger")``).

* ORM inserts in transactions of ``batch_size`` (the ORM's batched ``INSERT ... RETURNING``
  of server-generated keys), interleaved batch by batch with the floor;
* one ``UPDATE`` statement changing every row of a 10,000-row table, alternated with the
  same statement on the floor table.

``run(context)`` is the ``make bench`` section; ``python -m benchmarks.triggers`` runs it
alone and prints its rows.
"""

from __future__ import annotations

import decimal
import os
import random
import statistics
import sys
import time
from typing import Any

from sqlalchemy import DateTime, Numeric, String, create_engine, func, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .context import Context
from .report import Row
from .runner import run_interleaved

__all__ = ["run"]

UPDATE_ROWS = 10_000


class Base(DeclarativeBase):
    pass


class _Account:
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20))
    balance: Mapped[decimal.Decimal] = mapped_column(Numeric(10, 2))
    created_at: Mapped[Any] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FloorAccount(_Account, Base):
    __tablename__ = "bench_floor_accounts"


class TriggerAccount(_Account, Base):
    __tablename__ = "bench_trigger_accounts"


class _Inserts:
    """A configuration of the interleaved loop: ORM inserts into one table."""

    def __init__(self, key: str, cls: type[Any], factory: sessionmaker[Session],
                 batch_size: int, floor: str | None) -> None:
        self.key, self.cls, self.factory = key, cls, factory
        self.batch_size, self.floor = batch_size, floor

    def prepare(self, repeat: int, rows: int) -> None:
        with self.factory.begin() as session:
            session.execute(text(f"TRUNCATE {self.cls.__tablename__}, signalbus_outbox_changes"))

    def batch(self, index: int, repeat: int) -> None:
        start = index * self.batch_size
        with self.factory() as session:
            session.add_all(self.cls(email=f"user{i}@example.com", name="Ada", plan="free",
                                     balance=decimal.Decimal("9.90"))
                            for i in range(start, start + self.batch_size))
            session.commit()


def _update_once(engine: Engine, table: str) -> float:
    with engine.begin() as conn:
        started = time.perf_counter()
        conn.execute(text(f"UPDATE {table} SET plan = CASE WHEN plan = 'free' THEN 'pro' "
                          "ELSE 'free' END, balance = balance + 1"))
    return time.perf_counter() - started


def _setup(url: str, schema: str) -> tuple[Engine, sessionmaker[Session]]:
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    import signalbus
    import signalbus.outbox
    from signalbus.outbox.changes import install_triggers

    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    for op in ("insert", "update", "delete"):
        signalbus.bind(TriggerAccount, op, f"bench_account_{op}", capture="trigger")
    bus = signalbus.SignalBus()  # only for the app's settings; no session is attached
    bus.attach(sessionmaker(engine), config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False)
    install_triggers(bus.runtime(), engine)
    return engine, sessionmaker(engine)


def run(ctx: Context) -> list[Row]:
    """The section's rows: insert cost and 10,000-row UPDATE cost against the floor."""
    section = "PostgreSQL, trigger capture"
    if ctx.postgres_url is None:
        return [Row(section, "trigger capture write cost", "floor",
                    note="not measured: PostgreSQL is not part of this run")]
    import signalbus.bindings

    schema = f"signalbus_bench_triggers_{os.getpid()}"
    saved = signalbus.bindings.registry.snapshot()  # later sections must not see ours
    engine, factory = _setup(ctx.postgres_url, schema)
    try:
        configs = [_Inserts("floor", FloorAccount, factory, ctx.batch_size, None),
                   _Inserts("trigger", TriggerAccount, factory, ctx.batch_size, "floor")]
        ctx.progress(f"{section}: ORM inserts, {ctx.rows} rows × {ctx.repeats} repeats, "
                     "interleaved")
        result = run_interleaved(configs, rows=ctx.rows, batch_size=ctx.batch_size,
                                 repeats=ctx.repeats, progress=ctx.progress,
                                 deadline=ctx.deadline(0.95))
        inserts = result.ratio("trigger", "floor")
        ctx.progress(f"{section}: one {UPDATE_ROWS:,}-row UPDATE statement × "
                     f"{max(ctx.repeats, 5)} repeats, alternated")
        with engine.begin() as conn:
            for cls in (FloorAccount, TriggerAccount):
                conn.execute(text(f"TRUNCATE {cls.__tablename__}"))
                conn.execute(text(
                    f"INSERT INTO {cls.__tablename__} (email, name, plan, balance) "
                    f"SELECT 'u' || g || '@x.org', 'Ada', 'free', 9.90 "
                    f"FROM generate_series(1, {UPDATE_ROWS}) g"))
                conn.execute(text(f"ANALYZE {cls.__tablename__}"))
            conn.execute(text("TRUNCATE signalbus_outbox_changes"))
        rng = random.Random(7)
        ratios = []
        for _ in range(max(ctx.repeats, 5)):
            order = ["floor", "trigger"]
            rng.shuffle(order)
            took = {}
            for which in order:
                table = (FloorAccount if which == "floor" else TriggerAccount).__tablename__
                took[which] = _update_once(engine, table)
            ratios.append(took["trigger"] / took["floor"])
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE signalbus_outbox_changes"))
        return [
            Row(section, f"ORM inserts, transactions of {ctx.batch_size}: captured by the "
                "generated triggers", "floor", inserts.median, inserts.low, inserts.high,
                target="≤ 1.25×", verdict="met" if inserts.median <= 1.25 else "missed",
                note=f"one outbox changes row per INSERT statement; {len(inserts.values)} "
                     "repeats"),
            Row(section, f"one UPDATE statement of {UPDATE_ROWS:,} rows, captured by the "
                "generated triggers", "floor", statistics.median(ratios), min(ratios),
                max(ratios), target="≤ 1.5×",
                verdict="met" if statistics.median(ratios) <= 1.5 else "missed",
                note=f"one outbox changes row for the statement; {len(ratios)} repeats"),
        ]
    finally:
        signalbus.bindings.registry.restore(saved)
        engine.dispose()
        admin = create_engine(ctx.postgres_url)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def main() -> int:
    from .databases import postgres_url
    from .report import table

    quick = "--quick" in sys.argv[1:]
    ctx = Context(rows=2_000 if quick else 20_000, batch_size=100, repeats=2 if quick else 5,
                  memory_rows=0, postgres_url=postgres_url(), started=time.perf_counter())
    print(table(run(ctx)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
