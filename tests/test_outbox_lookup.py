"""Finding an event by id reads the ``event_id`` index (EXPLAIN, SQLite and PostgreSQL);
the dead lists read the index of dead rows; a version-2 database is refused with the
upgrade step, and that step works; ``status`` estimates ``done`` on a large PostgreSQL
outbox and says so."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, insert, inspect, select, text, update
from sqlalchemy.engine import Connection, Engine

import signalbus.outbox
from signalbus.outbox import admin, outbox, schema, sql

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
ROWS = 2000


@pytest.fixture
def outbox_engine(engine: Engine) -> Iterator[Engine]:
    signalbus.outbox.drop_all(engine)
    signalbus.outbox.create_all(engine)
    yield engine
    signalbus.outbox.drop_all(engine)


def fill(engine: Engine, n: int = ROWS) -> None:
    """``n`` events through the write at commit (``insert_events``: COPY on psycopg),
    then settled: every 7th dead, the rest done; statistics refreshed."""
    with engine.begin() as conn:
        sql.insert_events(conn, ({
            "row_key": f"m#{i}", "event_id": f"e-{i}",
            "payload": {"id": f"e-{i}", "signal": f"s{i % 3}"}} for i in range(n)))
        conn.execute(update(outbox).values(state="done", settled_at=NOW))
        conn.execute(update(outbox).where(outbox.c.id % 7 == 0)
                     .values(state="dead", last_error="unreadable"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def plans(engine: Engine, run: Callable[[Connection], Any],
          keep: Callable[[str], bool]) -> list[str]:
    """The plan of every statement ``run`` sends on the outbox table that ``keep``
    selects (run again as EXPLAIN with the same parameters)."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if "signalbus_outbox " in statement + " " and keep(statement):
            seen.append((statement, parameters))

    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        event.listen(engine, "before_cursor_execute", record)
        try:
            run(conn)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        out = ["\n".join(str(r[-1]) for r in conn.exec_driver_sql(
            explain + statement, parameters).all()) for statement, parameters in seen]
        conn.rollback()
    return out


def by_event_id(statement: str) -> bool:
    return "event_id" in statement.split("WHERE", 1)[-1] and "WHERE" in statement


def test_find_event_reads_the_event_id_index(outbox_engine):
    fill(outbox_engine)
    found = plans(outbox_engine, lambda conn: (sql.find_event(conn, "e-1001"),
                                               sql.find_event(conn, "no-such-id")),
                  by_event_id)
    assert len(found) == 2
    for plan in found:
        assert "ix_signalbus_outbox_event_id" in plan, plan
    with outbox_engine.connect() as conn:
        row = sql.find_event(conn, "e-1001")
        assert row is not None and row.payload["id"] == "e-1001"
        assert sql.find_event(conn, "no-such-id") is None


def test_retry_and_replay_by_event_read_the_event_id_index(outbox_engine):
    fill(outbox_engine)
    where = sql.event_filter(event_ids=["e-1001"])

    def run(conn: Connection) -> None:
        sql.count_events(conn, where, pending=False)
        sql.settled_events_after(conn, where, 0, 500)
        sql.requeue(conn, now=NOW, event_ids=["e-1001"])

    found = plans(outbox_engine, run, by_event_id)
    assert len(found) == 3
    for plan in found:
        assert "ix_signalbus_outbox_event_id" in plan, plan


def test_the_dead_lists_read_the_index_of_dead_rows(outbox_engine):
    fill(outbox_engine)

    def run(conn: Connection) -> None:
        sql.dead_events(conn, 50)
        sql.latest_dead(conn, 10)
        sql.event_counts(conn)

    def dead_events(statement: str) -> bool:  # not the deliveries' half of latest_dead
        return "signalbus_outbox_deliveries" not in statement and "count" not in statement

    found = plans(outbox_engine, run, dead_events)
    assert len(found) == 2
    for plan in found:
        assert "ix_signalbus_outbox_dead" in plan, plan
    counted = plans(outbox_engine, run, lambda s: "count" in s)
    assert any("ix_signalbus_outbox_dead" in plan for plan in counted), counted
    with outbox_engine.connect() as conn:
        assert [r.id for r in sql.dead_events(conn, 3)] == sorted(
            (i for i in range(1, ROWS + 1) if i % 7 == 0), reverse=True)[:3]


def make_version_2(engine: Engine) -> None:
    """The tables as schema version 2 had them: no event_id column, no dead index, no
    changes table."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE signalbus_outbox_changes"))
        conn.execute(text("DROP INDEX ix_signalbus_outbox_event_id"))
        conn.execute(text("DROP INDEX ix_signalbus_outbox_dead"))
        conn.execute(text("ALTER TABLE signalbus_outbox DROP COLUMN event_id"))
        conn.execute(update(schema.schema_version).values(version=2))
        conn.execute(text("INSERT INTO signalbus_outbox (row_key, payload, state) "
                          "VALUES ('m#1', :p, 'pending')"), {"p": '{"id": "old-1", "signal": "s"}'})


def test_a_version_2_database_names_the_upgrade_and_the_upgrade_works(outbox_engine):
    make_version_2(outbox_engine)
    dialect = outbox_engine.dialect.name
    with outbox_engine.connect() as conn, pytest.raises(schema.SchemaMismatch) as info:
        schema.check(conn)
    message = str(info.value)
    assert ("the signalbus outbox in this database has schema version 2; this signalbus "
            f"needs version 3. Upgrade step: run the statements of "
            f"signalbus.outbox.schema.upgrade_sql('{dialect}', 2) (docs/outbox-design.md, "
            '"Schema versions", version 2 -> 3') in message
    statements = schema.upgrade_sql(dialect, 2)
    if dialect == "postgresql":
        assert any("CREATE INDEX CONCURRENTLY" in s for s in statements)
    if dialect == "postgresql":  # CREATE INDEX CONCURRENTLY runs outside a transaction
        with outbox_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    else:
        with outbox_engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
    with outbox_engine.connect() as conn:
        schema.check(conn)
        row = sql.find_event(conn, "old-1")
        assert row is not None and row.row_key == "m#1"
        # the indexes create_all makes
        indexes = {i["name"] for i in inspect(conn).get_indexes("signalbus_outbox")}
        changes = {c["name"] for c in inspect(conn).get_columns("signalbus_outbox_changes")}
    assert {"ix_signalbus_outbox_event_id", "ix_signalbus_outbox_dead"} <= indexes
    assert changes == {c.name for c in schema.changes.columns}


def test_upgrade_sql_refuses_what_it_cannot_do():
    with pytest.raises(signalbus.ConfigurationError, match="only from version 2"):
        schema.upgrade_sql("postgresql", 1)
    with pytest.raises(signalbus.ConfigurationError, match="'mysql' database"):
        schema.upgrade_sql("mysql", 2)


def test_status_counts_a_small_outbox_and_estimates_done_on_a_large_one(outbox_engine,
                                                                        monkeypatch):
    fill(outbox_engine)
    with outbox_engine.begin() as conn:  # and a pending one
        conn.execute(insert(outbox), {"row_key": None, "event_id": "p-1",
                                      "payload": {"id": "p-1", "signal": "s1"}})
    dead = len(range(7, ROWS + 1, 7))
    exact = admin.status(outbox_engine)
    assert exact["estimated"] == []
    assert exact["events"] == {"pending": 1, "done": ROWS - dead, "dead": dead}
    per_signal = {s: c["done"] for s, c in exact["signals"].items()}
    assert sum(per_signal.values()) == ROWS - dead and set(per_signal) == {"s0", "s1", "s2"}
    assert exact["signals"]["s1"]["pending"] == 1

    monkeypatch.setattr(sql, "ESTIMATE_ABOVE", 0)  # every table is "large"
    found = admin.status(outbox_engine)
    if outbox_engine.dialect.name == "sqlite":  # no statistics of the row count: counted
        assert found == {**exact, "oldest_pending_age_seconds":
                         found["oldest_pending_age_seconds"]}
        return
    assert found["estimated"] == ["events.done", "signals.done"]
    # statistics taken before the pending row: ANALYZE's count of a small table is exact,
    # and the sample of a table this small is all of it
    assert found["events"] == {"pending": 1, "done": ROWS - dead - 1, "dead": dead}
    assert sum(c["done"] for c in found["signals"].values()) == pytest.approx(
        ROWS - dead - 1, abs=3)
    assert {s: c["dead"] for s, c in found["signals"].items()} == {
        s: c["dead"] for s, c in exact["signals"].items()}
    assert admin.status(outbox_engine, exact=True)["events"] == exact["events"]


def test_a_row_stored_without_event_id_gets_its_payloads(outbox_engine):
    with outbox_engine.begin() as conn:
        sql.insert_events(conn, [{"row_key": None, "payload": {"id": "e-x", "signal": "s"}},
                                 {"row_key": None, "payload": {"signal": "no id"}}])
    with outbox_engine.connect() as conn:
        row = sql.find_event(conn, "e-x")
        assert row is not None and row.payload["id"] == "e-x"
        assert conn.execute(select(outbox.c.event_id).order_by(outbox.c.id)).scalars().all() \
            == ["e-x", None]
