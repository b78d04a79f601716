"""The plan_subscriptions table: created through the host's metadata or create_all()."""

from __future__ import annotations

import datetime as dt

import pytest
import signalbus_plans
from signalbus_plans.table import UTCDateTime
from sqlalchemy import MetaData, insert, inspect, select
from sqlalchemy.exc import IntegrityError


def test_include_in_copies_the_table_into_the_host_metadata():
    host_metadata = MetaData()
    table = signalbus_plans.include_in(host_metadata)
    assert host_metadata.tables["plan_subscriptions"] is table
    assert table is not signalbus_plans.plan_subscriptions
    assert [c.name for c in table.columns] == [
        c.name for c in signalbus_plans.plan_subscriptions.columns]
    assert signalbus_plans.include_in(host_metadata) is table  # once per metadata


def test_create_all_creates_the_table_once(engine):
    signalbus_plans.create_all(engine)
    signalbus_plans.create_all(engine)  # already there: no error
    try:
        inspector = inspect(engine)
        columns = {c["name"] for c in inspector.get_columns("plan_subscriptions")}
        assert columns == {"id", "user_id", "service", "plan", "active", "created_at",
                           "updated_at", "event_id", "event_at"}
        unique = inspector.get_unique_constraints("plan_subscriptions")
        assert [sorted(u["column_names"]) for u in unique] == [["service", "user_id"]]
    finally:
        signalbus_plans.metadata.drop_all(engine)


def test_one_row_per_user_and_service(engine):
    t = signalbus_plans.plan_subscriptions
    signalbus_plans.create_all(engine)
    now = dt.datetime.now(dt.UTC)
    row = {"user_id": "1", "service": "newsletter", "plan": "free", "active": True,
           "created_at": now, "updated_at": now, "event_id": "e", "event_at": now}
    try:
        with engine.begin() as conn:
            conn.execute(insert(t), row)
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(insert(t), row)
        with engine.connect() as conn:
            stored = conn.execute(select(t.c.created_at)).scalar_one()
        assert stored == now and stored.tzinfo is not None  # aware UTC on every database
    finally:
        signalbus_plans.metadata.drop_all(engine)


def test_naive_timestamps_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        UTCDateTime().process_bind_param(dt.datetime(2024, 1, 1), None)  # type: ignore[arg-type]
