"""The outbox worker's claim reads a batch's worth of rows, whatever the backlog and
whether or not the table has statistics (PostgreSQL: the plan is checked)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import String, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event
from signalbus.bus import Runtime
from signalbus.outbox import sql, utcnow
from signalbus.outbox.worker import Worker, drain


class Base(DeclarativeBase):
    pass


class Entry(Base):
    __tablename__ = "ob_claim_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(default=0)
    label: Mapped[str] = mapped_column(String(50), default="")


ORDER: list[tuple[str, int, int]] = []
"""(receiver, entry id, version) of every call, in call order."""


def one(sender: Any, event: Event, **kw: Any) -> None:
    ORDER.append(("one", event.pk, event.data["version"]))


def two(sender: Any, event: Event, **kw: Any) -> None:
    ORDER.append(("two", event.pk, event.data["version"]))


@pytest.fixture
def runtime(engine: Engine) -> Iterator[Runtime]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    ORDER.clear()
    signalbus.bind(Entry, "insert", "ob_claim_saved")
    signalbus.bind(Entry, "update", "ob_claim_saved")
    rt = signalbus.SignalBus().attach(sessionmaker(engine), plugins=False,
                                      config={"SIGNALBUS_DELIVERY": "outbox"})
    rt.connect("ob_claim_saved", one)
    rt.connect("ob_claim_saved", two)
    yield rt
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


def backlog(runtime: Runtime, rows: int, versions: int) -> None:
    """``rows`` inserts, then ``versions - 1`` updates of each, one commit per round."""
    with runtime.session_factory() as s:
        s.add_all(Entry(id=i) for i in range(rows))
        s.commit()
        for v in range(1, versions):
            for entry in s.query(Entry):
                entry.version = v
            s.commit()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("statistics", ["none", "stale"])
def test_the_claim_walks_a_batch_of_the_pending_index_whatever_the_statistics(
        runtime, engine, statistics):
    with engine.begin() as conn:  # the statistics are the test's to set
        conn.execute(text("ALTER TABLE signalbus_outbox SET (autovacuum_enabled = off)"))
    if statistics == "stale":  # analyzed when every event was delivered; then a burst
        backlog(runtime, 50, 1)
        drain(runtime, engine=engine)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE signalbus_outbox"))
        with runtime.session_factory() as s:
            s.query(Entry).delete()
            s.commit()
    backlog(runtime, 1000, 3)  # 3,000 events more: 1,000 chains of 3
    worker = Worker(runtime, engine=engine, batch=50, listen=False, handle_signals=False)
    now = utcnow()
    compiled = sql._statements("postgresql")["claim_events"].compile(engine)
    params = compiled.construct_params({"now": now, "until": now, "by": "w", "batch": 50})
    conn = worker.connection  # with the worker's own settings
    try:
        with conn.begin():
            known = conn.execute(text(
                "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = "
                "current_schema() AND tablename = 'signalbus_outbox' AND attname = 'state'"
            )).scalars().all()
            assert known == ([] if statistics == "none" else ["{done}"])
            raw = conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {compiled}", params).scalar()
            conn.rollback()
    finally:
        worker._close_connections()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    kinds = [node["Node Type"] for node in nodes(plan)]
    assert "Sort" not in kinds and "Bitmap Heap Scan" not in kinds, kinds
    assert "Seq Scan" not in kinds, kinds
    used = {n.get("Index Name"): n for n in nodes(plan) if "Index Name" in n}
    assert {"ix_signalbus_outbox_pending", "ix_signalbus_outbox_row"} <= set(used), used
    walk = used["ix_signalbus_outbox_pending"]
    # the first 50 pending events are the inserts' (each the head of its chain): the
    # walk stops there, out of 3,000
    assert walk["Node Type"] == "Index Scan" and walk["Actual Rows"] == 50
    probe = used["ix_signalbus_outbox_row"]
    assert probe["Actual Loops"] == 50  # one probe per row walked


def test_chains_are_claimed_head_first_batch_after_batch(runtime, engine):
    backlog(runtime, 30, 4)  # 120 events, 240 deliveries: 60 chains of 4
    stats = drain(runtime, engine=engine, batch=25)
    assert stats.delivered == 240
    seen: dict[tuple[str, int], list[int]] = {}
    for receiver, pk, version in ORDER:
        seen.setdefault((receiver, pk), []).append(version)
    assert len(seen) == 60 and all(v == [0, 1, 2, 3] for v in seen.values())
