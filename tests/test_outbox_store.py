"""Outbox mode, writing side: events are stored inside the transaction that made them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import MetaData, String, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import ConfigurationError, Event
from signalbus.bus import Runtime
from signalbus.outbox import deliveries, outbox


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "ob_store_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(default=0)


CALLS: list[tuple[str, Any, Event]] = []


def welcome(sender: Any, event: Event, **kw: Any) -> None:
    CALLS.append(("welcome", sender, event))


def audit(sender: Any, event: Event, **kw: Any) -> None:
    CALLS.append(("audit", sender, event))


@pytest.fixture
def tables(engine: Engine) -> Iterator[Engine]:
    Base.metadata.create_all(engine)
    signalbus.outbox.create_all(engine)
    CALLS.clear()
    yield engine
    signalbus.outbox.drop_all(engine)
    Base.metadata.drop_all(engine)


@pytest.fixture
def Session(engine: Engine) -> sessionmaker[Any]:  # noqa: N802 - a factory
    return sessionmaker(engine)


@pytest.fixture
def runtime(tables: Engine, Session: sessionmaker[Any]) -> Runtime:  # noqa: N803
    signalbus.bind(Member, "insert", "ob_member_joined")
    signalbus.bind(Member, "update", "ob_member_changed")
    rt = signalbus.SignalBus().attach(
        Session, config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False
    )
    rt.connect("ob_member_joined", welcome)
    rt.connect("ob_member_joined", audit)
    rt.connect("ob_member_changed", audit)
    return rt


def stored(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        ev = conn.execute(select(outbox).order_by(outbox.c.id)).all()
        dl = conn.execute(select(deliveries).order_by(deliveries.c.id)).all()
    return ev, dl


def test_commit_stores_one_row_per_event_and_nothing_per_receiver(runtime, Session, tables):
    with Session() as s:
        s.add(Member(email="a@example.com"))
        s.flush()
        s.add(Member(email="b@example.com"))
        s.commit()
    assert CALLS == []  # nothing runs in the committing process
    ev, dl = stored(tables)
    assert [e.payload["data"]["email"] for e in ev] == ["a@example.com", "b@example.com"]
    for row in ev:
        assert row.payload["signal"] == "ob_member_joined"
        assert row.payload["model"] == f"{Member.__module__}:Member"
        assert row.payload["op"] == "insert"
        assert row.row_key == f"{Member.__module__}:Member#{row.payload['pk']}"
        assert "attempt" not in row.payload
        assert (row.state, row.claimed_by, row.settled_at, row.last_error) == (
            "pending", None, None, None)
        assert row.created_at is not None
    assert dl == []  # the happy path writes no per-receiver row


def test_one_statement_per_commit(runtime, Session, tables, monkeypatch):
    """One ``INSERT`` (an executemany) per commit, or on PostgreSQL with psycopg one
    ``COPY`` (observed on the driver's cursor, which SQLAlchemy's events do not see)."""
    statements: list[tuple[str, int]] = []

    @event.listens_for(tables, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, len(parameters) if executemany else 1))

    if tables.dialect.name == "postgresql":
        import psycopg

        real_copy = psycopg.Cursor.copy

        def copy(self: Any, statement: Any, *args: Any, **kw: Any) -> Any:
            statements.append((str(statement), 0))
            return real_copy(self, statement, *args, **kw)

        monkeypatch.setattr(psycopg.Cursor, "copy", copy)
    try:
        with Session() as s:
            for flush in range(3):
                for i in range(20):
                    s.add(Member(email=f"m{flush}-{i}@example.com"))
                s.flush()
            s.commit()
    finally:
        event.remove(tables, "before_cursor_execute", count)
    writes = [(s[0].split()[0], s[0].split()[2 if s[0].startswith("INSERT") else 1], n)
              for s, n in ((st, st[1]) for st in statements)
              if "signalbus_outbox" in s[0] and s[0].split()[0] in ("INSERT", "COPY")]
    if tables.dialect.name == "postgresql":
        assert writes == [("COPY", "signalbus_outbox", 0)]
    else:
        assert writes == [("INSERT", "signalbus_outbox", 60)]
    notifies = [s for s in statements if "pg_notify" in s[0]]
    assert len(notifies) == (1 if tables.dialect.name == "postgresql" else 0)
    ev, dl = stored(tables)
    assert (len(ev), len(dl)) == (60, 0)


def test_a_large_transaction_is_written_in_steps_and_loses_nothing(runtime, Session, tables,
                                                                   monkeypatch):
    """Without ``COPY``, the rows go in ``executemany`` steps of ``INSERT_CHUNK`` (a large
    transaction's rows are never all held at once): every event stored, in order."""
    import signalbus.outbox.sql

    monkeypatch.setattr(signalbus.outbox.sql, "INSERT_CHUNK", 25)
    sizes: list[int] = []

    @event.listens_for(tables, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("INSERT") and "signalbus_outbox" in statement:
            sizes.append(len(parameters) if executemany else 1)

    try:
        with Session() as s:
            s.add_all([Member(email=f"m{i}@example.com") for i in range(60)])
            s.commit()
    finally:
        event.remove(tables, "before_cursor_execute", count)
    assert sizes == ([] if tables.dialect.name == "postgresql" else [25, 25, 10])
    ev, _ = stored(tables)
    assert [e.payload["data"]["email"] for e in ev] == [f"m{i}@example.com" for i in range(60)]
    assert len({e.event_id for e in ev}) == 60


def test_first_flush_inside_commit_is_stored(runtime, Session, tables):
    with Session() as s:
        s.add(Member(email="a@example.com"))
        s.commit()
        member = s.get(Member, 1)
        member.email = "changed@example.com"
        s.commit()  # this transaction's only flush is the commit's own
    ev, _ = stored(tables)
    assert [e.payload["signal"] for e in ev] == ["ob_member_joined", "ob_member_changed"]


def test_rollback_writes_nothing(runtime, Session, tables):
    with Session() as s:
        s.add(Member(email="a@example.com"))
        s.flush()
        s.rollback()
    with Session() as s:
        s.add(Member(email="b@example.com"))
        s.flush()
    assert stored(tables) == ([], [])


def test_failed_commit_writes_nothing(runtime, Session, tables):
    with Session() as s:
        s.add(Member(email="a@example.com"))
        s.commit()
    with Session() as s:
        s.add(Member(id=1, email="duplicate@example.com"))
        with pytest.raises(Exception, match="(?i)unique|duplicate"):
            s.commit()
    ev, _ = stored(tables)
    assert [e.payload["data"]["email"] for e in ev] == ["a@example.com"]


def test_savepoint_rollback_removes_only_its_events(runtime, Session, tables):
    with Session() as s:
        s.add(Member(email="kept@example.com"))
        sp = s.begin_nested()
        s.add(Member(email="dropped@example.com"))
        s.flush()
        sp.rollback()
        with s.begin_nested():
            s.add(Member(email="released@example.com"))
        s.commit()
    ev, dl = stored(tables)
    assert sorted(e.payload["data"]["email"] for e in ev) == [
        "kept@example.com", "released@example.com"
    ]
    assert dl == []
    with Session() as s:
        assert s.scalar(select(func.count()).select_from(Member)) == 2


def test_emit_without_session_is_stored_at_once(runtime, tables):
    signalbus.signal("ob_newsletter_sent")
    runtime.connect("ob_newsletter_sent", welcome)
    sent = runtime.emit("ob_newsletter_sent", {"issue": 7})
    ev, dl = stored(tables)
    assert [(e.payload["id"], e.payload["model"], e.payload["op"], e.row_key,
             e.payload["data"]) for e in ev] == [(sent.id, None, "emit", None, {"issue": 7})]
    assert dl == []


def test_emit_with_session_follows_its_transaction(runtime, Session, tables):
    signalbus.signal("ob_newsletter_sent")
    runtime.connect("ob_newsletter_sent", welcome)
    with Session() as s:
        runtime.bus.emit("ob_newsletter_sent", {"issue": 1}, session=s)
        s.rollback()
        kept = runtime.bus.emit("ob_newsletter_sent", {"issue": 2}, session=s)
        s.commit()
    ev, _ = stored(tables)
    assert [e.payload["id"] for e in ev] == [kept.id]


def test_a_receiver_without_stable_name_is_refused_at_connect(runtime):
    with pytest.raises(ConfigurationError) as info:
        runtime.connect("ob_member_joined", lambda sender, event, **kw: None)
    assert str(info.value) == (
        f"receiver '{__name__}:test_a_receiver_without_stable_name_is_refused_at_connect."
        "<locals>.<lambda>' of signal 'ob_member_joined' has no stable name, which "
        "SIGNALBUS_DELIVERY='outbox' needs to track its deliveries across restarts. Define "
        "it at module level, or give it one with name=..."
    )


def test_a_closure_connected_on_the_signal_is_refused_at_start(Session, tables):
    signalbus.bind(Member, "insert", "ob_member_joined")

    def closure(sender: Any, event: Event, **kw: Any) -> None:
        pass

    signalbus.signal("ob_member_joined").connect(closure)
    with pytest.raises(ConfigurationError, match=r"closure' of signal 'ob_member_joined' has "
                       "no stable name"):
        signalbus.SignalBus().attach(
            Session, config={"SIGNALBUS_DELIVERY": "outbox", "SIGNALBUS_PLUGINS": []}
        )


def test_a_closure_connected_later_fails_the_commit(runtime, Session, tables):
    def closure(sender: Any, event: Event, **kw: Any) -> None:
        pass

    signalbus.signal("ob_member_joined").connect(closure)
    with Session() as s:
        s.add(Member(email="a@example.com"))
        with pytest.raises(ConfigurationError, match="closure' of signal 'ob_member_joined'"):
            s.commit()
    assert stored(tables) == ([], [])


def test_a_named_closure_is_accepted(runtime, Session, tables, signalbus_drain):
    def closure(sender: Any, event: Event, **kw: Any) -> None:
        CALLS.append(("closure", sender, event))

    runtime.connect("ob_member_joined", closure, name="tests:named-closure")
    with Session() as s:
        s.add(Member(email="a@example.com"))
        s.commit()
    signalbus_drain(runtime)
    assert [name for name, _, _ in CALLS] == ["welcome", "audit", "closure"]


def test_missing_tables_are_named_with_the_fix(Session, engine):
    Base.metadata.create_all(engine)
    try:
        signalbus.bind(Member, "insert", "ob_member_joined")
        rt = signalbus.SignalBus().attach(
            Session, config={"SIGNALBUS_DELIVERY": "outbox"}, plugins=False
        )
        rt.connect("ob_member_joined", welcome)
        with Session() as s:
            s.add(Member(email="a@example.com"))
            with pytest.raises(ConfigurationError) as info:
                s.commit()
        assert str(info.value) == (
            "the signalbus outbox tables do not exist in this database. Create them with "
            "signalbus.outbox.create_all(engine), or add signalbus.outbox.metadata to your "
            "Alembic target_metadata, run a migration and call "
            "signalbus.outbox.stamp(op.get_bind()) in it."
        )
    finally:
        Base.metadata.drop_all(engine)


def test_drain_delivers_with_the_sender_and_attempt(runtime, Session, tables, signalbus_drain):
    with Session() as s:
        s.add(Member(email="a@example.com"))
        s.commit()
    stats = signalbus_drain(runtime)
    assert stats.delivered == 2
    assert [(name, sender, e.data["email"], e.attempt) for name, sender, e in CALLS] == [
        ("welcome", Member, "a@example.com", 1),
        ("audit", Member, "a@example.com", 1),
    ]
    ev, dl = stored(tables)
    assert ([e.state for e in ev], dl) == (["done"], [])
    assert ev[0].settled_at is not None
    assert signalbus_drain(runtime).delivered == 0


def test_drain_feeds_signalbus_capture(runtime, Session, tables, signalbus_drain,
                                       signalbus_capture):
    with Session() as s:
        s.add(Member(email="a@example.com"))
        s.commit()
    signalbus_capture.assert_not_sent("ob_member_joined")  # stored, not delivered yet
    signalbus_drain(runtime)
    signalbus_capture.assert_sent("ob_member_joined", email="a@example.com")


def test_include_in_copies_the_tables():
    target = MetaData()
    signalbus.outbox.include_in(target)
    assert set(target.tables) == {"signalbus_outbox", "signalbus_outbox_deliveries",
                                  "signalbus_outbox_changes", "signalbus_outbox_schema"}
    signalbus.outbox.include_in(target)  # a second call changes nothing
    assert len(target.tables) == 4


def test_settings_are_checked(Session, tables):
    with pytest.raises(ConfigurationError, match=r"^SIGNALBUS_OUTBOX_BATCH is 'many'; it must "
                       "be a whole number.$"):
        signalbus.SignalBus().attach(Session, plugins=False, config={
            "SIGNALBUS_DELIVERY": "outbox", "SIGNALBUS_OUTBOX_BATCH": "many"})
