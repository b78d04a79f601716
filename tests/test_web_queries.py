"""The page's queries against an oracle: for random outboxes (states, times with ties),
the dead and failing lists walked page by page give exactly the rows the database holds,
newest first, each once; the overview and per-minute counts equal the counts computed
from the rows (SQLite, and PostgreSQL for the examples)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

import signalbus.outbox
from signalbus.outbox import browse, deliveries, outbox, sql

NOW = dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=dt.UTC)

delivery_rows = st.lists(st.tuples(
    st.sampled_from(["pending", "delivered", "dead"]),
    st.integers(0, 3),           # attempts
    st.integers(0, 7),           # minutes ago (ties are likely)
    st.sampled_from(["s1", "s2"]),
    st.sampled_from(["r1", "r2"]),
), max_size=40)
event_rows = st.lists(st.tuples(
    st.sampled_from(["pending", "done", "dead"]),
    st.integers(0, 90),          # minutes ago settled
    st.sampled_from(["s1", "s2", "s3"]),
), min_size=1, max_size=30)


@pytest.fixture
def outbox_engine(engine: Engine) -> Iterator[Engine]:
    signalbus.outbox.create_all(engine)
    yield engine
    signalbus.outbox.drop_all(engine)


def fill(engine: Engine, events: list[Any], rows: list[Any]) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        conn.execute(delete(deliveries))
        conn.execute(delete(outbox))
        conn.execute(insert(outbox), [{
            "row_key": None, "state": state,
            "payload": {"id": f"e{i}", "signal": signal},
            "settled_at": None if state == "pending" else NOW - dt.timedelta(minutes=ago),
        } for i, (state, ago, signal) in enumerate(events)])
        first = conn.execute(select(outbox.c.id).order_by(outbox.c.id)).scalars().first()
        made = [{
            # one event row carries them all: receivers made unique per row
            "outbox_id": first, "event_id": f"d{i}", "receiver": f"{receiver}.{i}",
            "signal": signal,
            "row_key": None, "state": state, "attempts": attempts,
            "next_attempt_at": NOW, "claimed_until": None, "claimed_by": None,
            "last_error": None, "created_at": NOW,
            "updated_at": NOW - dt.timedelta(minutes=ago),
        } for i, (state, attempts, ago, signal, receiver) in enumerate(rows)]
        if made:
            conn.execute(insert(deliveries), made)
        ids = conn.execute(select(deliveries.c.id, deliveries.c.event_id)).all()
    by_event = {e: i for i, e in ids}
    for row in made:
        row["id"] = by_event[row["event_id"]]
    return made


def walk(engine: Engine, dead: bool, limit: int) -> list[int]:
    seen: list[int] = []
    after = None
    for _ in range(100):
        page = browse.problems(engine, dead=dead, limit=limit, after=after)
        seen += [item["id"] for item in page["items"]]
        assert len(page["items"]) <= limit
        after = page["next"]
        if after is None:
            return seen
    raise AssertionError("the pages never end")


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=event_rows, rows=delivery_rows, limit=st.integers(1, 7))
def test_pages_and_counts_match_the_rows(outbox_engine: Engine, events: list[Any],
                                         rows: list[Any], limit: int) -> None:
    made = fill(outbox_engine, events, rows)

    def expected(keep: Any) -> list[int]:
        chosen = [r for r in made if keep(r)]
        chosen.sort(key=lambda r: (r["updated_at"], r["id"]), reverse=True)
        return [r["id"] for r in chosen]

    assert walk(outbox_engine, True, limit) == expected(lambda r: r["state"] == "dead")
    assert walk(outbox_engine, False, limit) == expected(
        lambda r: r["state"] == "pending" and r["attempts"] > 0)

    report = browse.overview(outbox_engine, now=NOW)
    assert report["events"] == {s: sum(1 for e in events if e[0] == s)
                                for s in ("pending", "done", "dead")}
    assert report["deliveries"] == {s: sum(1 for r in made if r["state"] == s)
                                    for s in ("pending", "delivered", "dead")}
    want: dict[str, Counter[str]] = {}
    for state, ago, signal in events:
        if state == "pending":
            want.setdefault(signal, Counter())["pending"] += 1
        elif state == "done" and ago <= 60:
            want.setdefault(signal, Counter())["done_recent"] += 1
    for r in made:
        if r["state"] != "delivered":
            key = "retrying" if r["state"] == "pending" else "dead"
            want.setdefault(r["signal"], Counter())[key] += 1
    got = {name: Counter({k: v for k, v in c.items() if v})
           for name, c in report["signals"].items()}
    assert got == want

    minutes = browse.throughput(outbox_engine, minutes=60, now=NOW)
    first = minutes[0]["minute"]
    settled = Counter()
    for state, ago, _ in events:
        when = (NOW - dt.timedelta(minutes=ago)).replace(second=0, microsecond=0)
        if state != "pending" and when >= first:
            settled["done" if state == "done" else "dead"] += 1
    for r in made:
        when = r["updated_at"].replace(second=0, microsecond=0)
        if r["state"] != "pending" and when >= first:
            settled["delivered" if r["state"] == "delivered" else "dead"] += 1
    assert sum(m["done"] for m in minutes) == settled["done"]
    assert sum(m["delivered"] for m in minutes) == settled["delivered"]
    assert sum(m["dead"] for m in minutes) == settled["dead"]


def test_requeue_deliveries_leaves_delivered_and_claimed_ones_alone(
        outbox_engine: Engine) -> None:
    made = fill(outbox_engine, [("done", 1, "s1")], [
        ("dead", 3, 1, "s1", "r1"), ("delivered", 1, 1, "s1", "r1"),
        ("pending", 1, 1, "s1", "r2"), ("pending", 1, 1, "s1", "r1")])
    later = NOW + dt.timedelta(hours=1)
    with outbox_engine.begin() as conn:
        conn.execute(deliveries.update().where(deliveries.c.id == made[2]["id"])
                     .values(next_attempt_at=later))
        conn.execute(deliveries.update().where(deliveries.c.id == made[3]["id"])
                     .values(next_attempt_at=later, claimed_until=later, claimed_by="w1"))
        changed = sql.requeue_deliveries(conn, [r["id"] for r in made], NOW)
        rows = {r.id: r for r in conn.execute(select(deliveries))}
    assert changed == 2
    dead, delivered, waiting, claimed = (rows[r["id"]] for r in made)
    assert (dead.state, dead.attempts) == ("pending", 0)
    assert delivered.state == "delivered"
    assert signalbus.outbox.aware(waiting.next_attempt_at) == NOW
    assert signalbus.outbox.aware(claimed.next_attempt_at) == later
