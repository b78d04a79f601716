"""Trigger capture's rules, checked against what the database holds (Hypothesis).

Random transactions of SQL statements run outside the ORM, on a Core connection, against
a trigger-captured table: multi-row inserts, updates of several rows (one column, several
columns, a key change), deletes, SAVEPOINTs released or rolled back; then the transaction
commits or rolls back. The oracle reads the table before and after and diffs it by primary
key: a key only before is a delete, only after an insert, in both with other values an
update (a key deleted and inserted again is an update; a key changed by an ``UPDATE`` is a
delete of the old key and an insert of the new one). The events the worker makes of the
captured changes must be exactly those: op, pk, data, changes, and the ``when=`` verdicts.

Example counts: the ``ci`` profile of tests/test_capture_properties.py (derandomized);
``SIGNALBUS_PROPERTY_PROFILE=nightly`` for a long run.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import DateTime, String, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from conftest import pg_engine
from signalbus import Event
from signalbus.events import normalise
from signalbus.outbox.changes import install_triggers, uninstall_triggers
from signalbus.outbox.worker import Worker

PROFILE = os.environ.get("SIGNALBUS_PROPERTY_PROFILE", "ci")
if PROFILE not in settings._profiles:  # registered by tests/test_capture_properties.py
    settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
    settings.register_profile("nightly", max_examples=1500, deadline=None)

KEYS = list(range(1, 9))
COLUMNS = ("id", "name", "score", "api_token")
PAYLOAD = ("id", "name", "score", "created")  # api_token is redacted


class Base(DeclarativeBase):
    pass


class Gadget(Base):
    __tablename__ = "prop_gadgets"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name: Mapped[str | None] = mapped_column(String(20))
    score: Mapped[int] = mapped_column(server_default="0")
    api_token: Mapped[str | None] = mapped_column(String(20))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


RECEIVED: list[tuple[str, Event]] = []


def record(sender: Any, event: Event, **kw: Any) -> None:
    RECEIVED.append((event.signal, event))


SIGNALS = ("gadget_added", "gadget_changed", "gadget_scored", "gadget_removed")


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Engine, signalbus.SignalBus]]:
    engine = pg_engine()
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    signalbus.outbox.drop_all(engine)
    signalbus.outbox.create_all(engine)
    saved = signalbus.bindings.registry.snapshot()
    signalbus.bind(Gadget, "insert", "gadget_added", capture="trigger")
    signalbus.bind(Gadget, "update", "gadget_changed", capture="trigger")
    signalbus.bind(Gadget, "update", "gadget_scored", capture="trigger",
                   when=signalbus.changed("score"))
    signalbus.bind(Gadget, "delete", "gadget_removed", capture="trigger")
    for name in SIGNALS:
        signalbus.signal(name).connect(record)
    bus = signalbus.SignalBus()
    bus.attach(sessionmaker(engine), config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False)
    install_triggers(bus.runtime(), engine)
    try:
        yield engine, bus
    finally:
        uninstall_triggers(bus.runtime(), engine, discard=True)
        for name in SIGNALS:
            signalbus.signal(name).disconnect(record)
        signalbus.bindings.registry.restore(saved)
        Base.metadata.drop_all(engine)
        signalbus.outbox.drop_all(engine)
        engine.dispose()


names = st.sampled_from([None, "a", "b", "c"])
keys = st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True)
statement = st.one_of(
    st.tuples(st.just("insert"), keys, names),
    st.tuples(st.just("name"), keys, names),
    st.tuples(st.just("score"), keys, st.integers(-1, 2)),
    st.tuples(st.just("token"), keys, st.sampled_from(["t1", "t2", None])),
    st.tuples(st.just("rekey"), st.sampled_from(KEYS), st.sampled_from(KEYS)),
    st.tuples(st.just("delete"), keys, st.none()),
    st.tuples(st.just("savepoint"), st.booleans(), st.none()),
)
transactions = st.tuples(
    st.lists(st.tuples(st.sampled_from(KEYS), names), max_size=5, unique_by=lambda r: r[0]),
    st.lists(statement, min_size=1, max_size=8),
    st.booleans(),
)


def _rows(conn: Any) -> dict[int, dict[str, Any]]:
    return {r.id: dict(r._mapping) for r in conn.execute(select(Gadget.__table__))}


def _run(conn: Any, kind: str, arg: Any, value: Any) -> None:
    """One statement; rows it would break a constraint with are left out first."""
    present = set(conn.execute(text("SELECT id FROM prop_gadgets")).scalars())
    if kind == "insert":
        new = [k for k in arg if k not in present]
        if new:
            conn.execute(Gadget.__table__.insert(), [{"id": k, "name": value} for k in new])
    elif kind in ("name", "score", "token"):
        column = {"name": "name", "score": "score", "token": "api_token"}[kind]
        expr = text(f"{column} = :v") if kind != "score" else text("score = score + :v")
        conn.execute(text(f"UPDATE prop_gadgets SET {expr.text} WHERE id = ANY(:ids)"),
                     {"v": value, "ids": list(arg)})
    elif kind == "rekey":
        if arg in present and value not in present:
            conn.execute(text("UPDATE prop_gadgets SET id = :new WHERE id = :old"),
                         {"new": value, "old": arg})
    elif kind == "delete":
        conn.execute(text("DELETE FROM prop_gadgets WHERE id = ANY(:ids)"), {"ids": list(arg)})


def _expected(before: dict[int, dict[str, Any]],
              after: dict[int, dict[str, Any]]) -> list[tuple[Any, ...]]:
    def data(row: dict[str, Any]) -> dict[str, Any]:
        return {k: normalise(row[k]) for k in PAYLOAD}

    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None and new is not None:
            out.append(("gadget_added", key, data(new), {}))
        elif new is None and old is not None:
            out.append(("gadget_removed", key, data(old), {}))
        elif old is not None and new is not None:
            differ = [k for k in COLUMNS + ("created",) if old[k] != new[k]]
            if not differ:
                continue
            changes = {k: (normalise(old[k]), normalise(new[k])) for k in differ
                       if k in PAYLOAD}
            out.append(("gadget_changed", key, data(new), changes))
            if "score" in differ:
                out.append(("gadget_scored", key, data(new), changes))
    return sorted(out, key=repr)


@settings(settings.get_profile(PROFILE), suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(transactions)
def test_trigger_capture_matches_the_database(world, transaction):
    engine, bus = world
    seed, statements, commit = transaction
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE prop_gadgets, signalbus_outbox_changes, "
                          "signalbus_rows_prop_gadgets, signalbus_outbox_deliveries, "
                          "signalbus_outbox"))
        if seed:
            conn.execute(Gadget.__table__.insert(), [{"id": k, "name": n} for k, n in seed])
        conn.execute(text("DELETE FROM signalbus_rows_prop_gadgets"))
        conn.execute(text("DELETE FROM signalbus_outbox_changes"))
    with engine.connect() as conn:
        before = _rows(conn)
    with engine.connect() as conn:
        tx = conn.begin()
        savepoint = None
        for kind, arg, value in statements:
            if kind == "savepoint":
                if savepoint is None:
                    savepoint = conn.begin_nested()
                else:
                    (savepoint.commit if arg else savepoint.rollback)()
                    savepoint = None
                continue
            _run(conn, kind, arg, value)
        if savepoint is not None:
            savepoint.commit()
        (tx.commit if commit else tx.rollback)()
    with engine.connect() as conn:
        after = _rows(conn)
    RECEIVED.clear()
    Worker(bus.runtime(), listen=False, handle_signals=False).run(once=True)
    got = sorted(((name, e.pk, dict(e.data), {k: tuple(v) for k, v in e.changes.items()})
                  for name, e in RECEIVED), key=repr)
    assert all(e.source == "trigger" for _n, e in RECEIVED)
    assert got == _expected(before, after if commit else before)
