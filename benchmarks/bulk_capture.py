"""Bulk capture's cost: one ORM ``update()`` of 10,000 rows, against the same statement
with no binding, on SQLite and PostgreSQL (a ``make bench`` section).

    .venv/bin/python -m benchmarks.bulk_capture [--repeats 5] [--databases sqlite,postgresql]

Every configuration has a table of its own holding the same 10,000 rows (refilled before
each repeat, untimed); the timed unit is one transaction running
``session.execute(update(Model).values(email=..., name=...))`` on every row, then the
commit (inline receivers included). Configurations are interleaved statement by
statement in a shuffled order (:func:`benchmarks.runner.run_interleaved`); each repeat
gives one ratio to the floor of the same repeat:

* ``floor``: plain session, no listener;
* ``unbound``: a session signalbus is attached to, a model without a binding (bulk
  capture must cost nothing: no extra statement);
* ``bulk``: an update binding and 3 no-op receivers, inline delivery: 10,000 events;
* ``bulk-outbox``: the same in outbox mode (the 10,000 events stored in the transaction);
* ``orm-way``: for scale, the same change made the way an app had to before bulk
  capture to get its events: load the objects, set the attributes, flush;
* two ways of reading the new values after the statement, by hand with SQLAlchemy Core
  on the floor's model (the statement plus the read, no signalbus): ``SELECT … WHERE
  pk IN (…)`` in chunks of 500 (what bulk capture does: the caller's result stays
  untouched) and ``UPDATE … RETURNING`` every column.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, String, create_engine, insert, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
import signalbus.sqlite

from .context import Context
from .databases import postgres_url
from .report import Row, table
from .runner import Interleaved, run_interleaved

ROWS = 10_000
STATEMENTS = 3
"""10,000-row statements per configuration per repeat."""
CHUNK = 500
SIGNAL = "bench_bulk_changed"
OUTBOX_SIGNAL = "bench_bulk_outbox_changed"
ORM_SIGNAL = "bench_bulk_orm_changed"


class Base(DeclarativeBase):
    pass


class Columns:
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        default=lambda: dt.datetime.now(dt.UTC))


class FloorRow(Columns, Base):
    __tablename__ = "bench_bulk_floor"


class UnboundRow(Columns, Base):
    __tablename__ = "bench_bulk_unbound"


class BoundRow(Columns, Base):
    __tablename__ = "bench_bulk_bound"


class OutboxRow(Columns, Base):
    __tablename__ = "bench_bulk_outbox"


class OrmRow(Columns, Base):
    __tablename__ = "bench_bulk_orm"


class ReselectRow(Columns, Base):
    __tablename__ = "bench_bulk_reselect"


class ReturningRow(Columns, Base):
    __tablename__ = "bench_bulk_returning"


def _noop(sender: Any, **kwargs: Any) -> None:
    return None


def _noop_2(sender: Any, **kwargs: Any) -> None:
    return None


def _noop_3(sender: Any, **kwargs: Any) -> None:
    return None


_declared = False


def declare() -> None:
    global _declared
    if _declared:
        return
    signalbus.bind(BoundRow, "update", SIGNAL)
    signalbus.bind(OutboxRow, "update", OUTBOX_SIGNAL)
    signalbus.bind(OrmRow, "update", ORM_SIGNAL)
    for name in (SIGNAL, OUTBOX_SIGNAL, ORM_SIGNAL):
        for fn in (_noop, _noop_2, _noop_3):
            signalbus.receiver(name)(fn)
    _declared = True


class Config:
    key = ""
    label = ""
    floor: str | None = "floor"
    model: type[Columns] = FloorRow

    def __init__(self, engine: Engine, factory: sessionmaker[Session]) -> None:
        self.engine = engine
        self.factory = factory

    def prepare(self, repeat: int, rows: int) -> None:
        table = self.model.__table__  # type: ignore[attr-defined]
        now = dt.datetime.now(dt.UTC)
        with self.engine.begin() as conn:
            conn.execute(table.delete())
            conn.execute(insert(table), [
                {"id": i, "email": f"user{i}@example.com", "name": f"User {i}",
                 "is_active": True, "created_at": now} for i in range(1, ROWS + 1)])
        if self.key == "bulk-outbox":
            with self.engine.begin() as conn:
                conn.execute(signalbus.outbox.deliveries.delete())
                conn.execute(signalbus.outbox.outbox.delete())

    def values(self, index: int, repeat: int) -> dict[str, Any]:
        stamp = f"r{repeat}s{index}"
        model = self.model
        return {"email": model.email + stamp, "name": f"renamed {stamp}"}

    def batch(self, index: int, repeat: int) -> None:
        with self.factory() as session:
            session.execute(update(self.model).values(**self.values(index, repeat)))
            session.commit()


class Floor(Config):
    key, label, floor = "floor", "floor: ORM update() of 10,000 rows, no listener", None


class Unbound(Config):
    key = "unbound"
    label = "signalbus attached, model without a binding"
    model = UnboundRow


class Bulk(Config):
    key = "bulk"
    label = "bulk capture inline: update binding, 3 no-op receivers (10,000 events)"
    model = BoundRow


class BulkOutbox(Config):
    key = "bulk-outbox"
    label = "bulk capture, outbox: the 10,000 events stored in the transaction"
    model = OutboxRow


class OrmWay(Config):
    key = "orm-way"
    label = ("the same change the ORM way: load the 10,000 objects, set, flush; "
             "signalbus inline, update binding, 3 no-op receivers")
    model = OrmRow

    def batch(self, index: int, repeat: int) -> None:
        stamp = f"r{repeat}s{index}"
        with self.factory() as session:
            for row in session.scalars(select(self.model)):
                row.email = row.email + stamp
                row.name = f"renamed {stamp}"
            session.commit()


class Reselect(Config):
    key = "reselect"
    label = "by hand: the UPDATE, then SELECT every column WHERE pk IN (500 keys)…"
    model = ReselectRow

    def batch(self, index: int, repeat: int) -> None:
        model = self.model
        cols = [model.id, model.email, model.name, model.is_active, model.created_at]
        with self.factory() as session:
            keys = session.scalars(select(model.id).order_by(model.id)).all()
            session.execute(update(model).values(**self.values(index, repeat)))
            got = 0
            for i in range(0, len(keys), CHUNK):
                got += len(session.execute(
                    select(*cols).where(model.id.in_(keys[i:i + CHUNK]))).all())
            assert got == ROWS
            session.commit()


class Returning(Config):
    key = "returning"
    label = "by hand: UPDATE … RETURNING every column"
    model = ReturningRow

    def batch(self, index: int, repeat: int) -> None:
        model = self.model
        table = model.__table__  # type: ignore[attr-defined]
        with self.factory() as session:
            session.scalars(select(model.id).order_by(model.id)).all()  # as Reselect
            values = {"email": table.c.email + f"r{repeat}s{index}",
                      "name": f"renamed r{repeat}s{index}"}
            rows = session.connection().execute(
                update(table).values(**values).returning(*table.c)).all()
            assert len(rows) == ROWS
            session.commit()


@contextmanager
def database(kind: str, url: str | None) -> Iterator[Engine]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="signalbus-bulk-") as tmp:
            engine = signalbus.sqlite.configure(create_engine(f"sqlite:///{tmp}/bulk.db"))
            Base.metadata.create_all(engine)
            signalbus.outbox.create_all(engine)
            try:
                yield engine
            finally:
                engine.dispose()
        return
    assert url is not None
    schema = f"signalbus_bulk_{os.getpid()}"
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
        try:
            Base.metadata.create_all(engine)
            signalbus.outbox.create_all(engine)
            yield engine
        finally:
            engine.dispose()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


def measure(engine: Engine, repeats: int, deadline: float | None = None,
            progress: Any = None) -> Interleaved:
    declare()
    plain = sessionmaker(engine)
    attached = sessionmaker(engine)
    signalbus.SignalBus().attach(attached, config={"SIGNALBUS_DELIVERY": "inline"},
                                 plugins=False)
    stored = sessionmaker(engine)
    signalbus.SignalBus().attach(stored, config={"SIGNALBUS_DELIVERY": "outbox"},
                                 plugins=False)
    configs = [Floor(engine, plain), Unbound(engine, attached), Bulk(engine, attached),
               BulkOutbox(engine, stored), OrmWay(engine, attached), Reselect(engine, plain),
               Returning(engine, plain)]
    return run_interleaved(configs, rows=ROWS * STATEMENTS, batch_size=ROWS, repeats=repeats,
                           warmup_batches=1, progress=progress, deadline=deadline)


LABELS = {c.key: c.label
          for c in (Floor, Unbound, Bulk, BulkOutbox, OrmWay, Reselect, Returning)}


def rows_of(name: str, result: Interleaved) -> list[Row]:
    out = []
    floor = result.totals["floor"]
    per_statement = sorted(t / STATEMENTS * 1000 for t in floor)
    out.append(Row(name, LABELS["floor"], "", sorted(per_statement)[len(per_statement) // 2],
                   per_statement[0], per_statement[-1], unit="ms",
                   note=f"per statement, absolute, for scale; {result.repeats} repeats of "
                        f"{STATEMENTS} statements"))
    for key in ("unbound", "bulk", "bulk-outbox", "orm-way", "reselect", "returning"):
        r = result.ratio(key, "floor")
        note = ""
        if key == "unbound":
            note = "no extra statement (tests/test_bulk.py counts them)"
        elif key == "bulk":
            note = "old values read FOR UPDATE (PostgreSQL) before, new ones by key after"
        elif key == "orm-way":
            note = "for scale: what bulk capture spares an app that needs the events"
        elif key in ("reselect", "returning"):
            note = "the new values' read alone, no capture: which form is cheaper"
        out.append(Row(name, LABELS[key], "floor", r.median, r.low, r.high, note=note))
    return out


def run(ctx: Context) -> list[Row]:
    """The ``make bench`` section."""
    rows: list[Row] = []
    kinds = ["sqlite"] + (["postgresql"] if ctx.postgres_url else [])
    repeats = 2 if ctx.quick else max(3, ctx.repeats)
    for kind in kinds:
        name = "SQLite" if kind == "sqlite" else "PostgreSQL"
        ctx.progress(f"{name}: bulk capture, {len(LABELS)} configurations × {STATEMENTS} "
                     f"statements of {ROWS} rows × {repeats} repeats, interleaved")
        with database(kind, ctx.postgres_url) as engine:
            result = measure(engine, repeats, progress=lambda m, n=name: ctx.progress(
                f"{n} bulk: {m}"))
        rows += rows_of(f"{name} (bulk)", result)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bulk_capture")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    kinds = [k for k in args.databases.split(",") if k]
    ctx = Context(rows=ROWS, batch_size=ROWS, repeats=args.repeats, memory_rows=0,
                  postgres_url=postgres_url() if "postgresql" in kinds else None)
    print(table(run(ctx)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
