"""Bulk capture: ORM ``insert``/``update``/``delete`` statements run through the session
become events with ``source="bulk"``, with the transaction semantics of flushed changes;
inline and outbox delivery, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import (
    DateTime,
    MetaData,
    String,
    bindparam,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ResourceClosedError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import Event, changed


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "bk_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20), default="free")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    joined_at: Mapped[dt.datetime] = mapped_column(
        DateTime, server_default=func.current_timestamp())


class Tag(Base):
    """Never bound: statements on it must cost nothing."""

    __tablename__ = "bk_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(40))


class Seat(Base):
    """A composite primary key."""

    __tablename__ = "bk_seats"
    hall: Mapped[str] = mapped_column(String(10), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(40))


@pytest.fixture
def tables(mode_tables: Callable[[MetaData], Engine]) -> Engine:
    return mode_tables(Base.metadata)


Got = Callable[[], list[Event]]


@pytest.fixture
def run(tables: Engine, attach_recording: Callable[..., Any]
        ) -> Callable[[], tuple[sessionmaker[Session], Got]]:
    """Attach a bus (after the test's bindings); returns its session factory and a
    function returning (and forgetting) the events delivered so far."""

    def start() -> tuple[sessionmaker[Session], Got]:
        factory, got = attach_recording(tables)
        return factory, got

    return start


def _bind_all() -> None:
    signalbus.bind(Member, "insert", "bk_joined")
    signalbus.bind(Member, "update", "bk_changed")
    signalbus.bind(Member, "delete", "bk_left")


def _seed(factory: sessionmaker[Session], n: int = 3) -> None:
    with factory() as s, signalbus.muted():
        s.add_all(Member(id=i, email=f"m{i}@x", plan="free") for i in range(1, n + 1))
        s.commit()


def test_bulk_insert_sends_inserts_with_server_values(run):
    _bind_all()
    factory, got = run()
    with factory() as s:
        result = s.execute(insert(Member), [{"email": "a@x"}, {"email": "b@x", "plan": "pro"}])
        with pytest.raises(ResourceClosedError):
            result.all()  # the caller asked for no rows and gets none
        s.commit()
    events = got()
    assert [(e.signal, e.op, e.source, e.data["email"], e.data["plan"]) for e in events] == [
        ("bk_joined", "insert", "bulk", "a@x", "free"),
        ("bk_joined", "insert", "bulk", "b@x", "pro"),
    ]
    assert [e.pk for e in events] == [e.data["id"] for e in events]
    assert all(isinstance(e.pk, int) for e in events)
    assert all(e.data["joined_at"] for e in events)  # the server default
    assert "password_hash" not in events[0].data  # redacted as ORM events are


def test_bulk_insert_keeps_the_callers_returning(run):
    _bind_all()
    factory, got = run()
    with factory() as s:
        ids = s.scalars(insert(Member).returning(Member.id),
                        [{"email": "a@x"}, {"email": "b@x"}]).all()
        one = s.execute(insert(Member).values(email="c@x"))
        new_id = one.inserted_primary_key[0]
        (member,) = s.scalars(insert(Member).returning(Member), [{"email": "d@x"}]).all()
        assert isinstance(member, Member) and member.plan == "free"
        member_id = member.id
        s.commit()
    events = got()
    assert [e.pk for e in events] == [*ids, new_id, member_id]
    assert [e.data["email"] for e in events] == ["a@x", "b@x", "c@x", "d@x"]


def test_update_where_carries_real_old_values(run):
    _bind_all()
    factory, got = run()
    _seed(factory)
    with factory() as s:
        result = s.execute(update(Member).where(Member.id >= 2).values(plan="pro"))
        assert result.rowcount == 2  # type: ignore[attr-defined]
        s.commit()
    events = got()
    assert [(e.signal, e.op, e.pk, e.source, dict(e.changes)) for e in events] == [
        ("bk_changed", "update", 2, "bulk", {"plan": ("free", "pro")}),
        ("bk_changed", "update", 3, "bulk", {"plan": ("free", "pro")}),
    ]
    assert events[0].data["email"] == "m2@x"


def test_old_values_are_read_for_update_on_postgresql(run, tables):
    _bind_all()
    factory, got = run()
    _seed(factory)
    seen = _count_statements(tables)
    with factory() as s:
        s.execute(update(Member).where(Member.id == 2).values(plan="pro"))
        s.execute(delete(Member).where(Member.id == 3))
        s.commit()
    reads = [sql for sql in seen if sql.lstrip().upper().startswith("SELECT")]
    locked = [sql for sql in reads if "FOR UPDATE" in sql.upper()]
    if tables.dialect.name == "postgresql":
        assert len(locked) == 2  # the rows of the UPDATE and of the DELETE
    else:
        assert locked == []  # SQLite has no FOR UPDATE (its writer lock covers it)
    assert len(got()) == 2


def test_a_statement_with_parameters(run):
    _bind_all()
    factory, got = run()
    _seed(factory)
    with factory() as s:
        s.execute(update(Member).where(Member.id == bindparam("target")).values(plan="pro"),
                  {"target": 2})
        s.execute(update(Member).where(Member.id == 3), {"email": "set@x"})
        s.execute(delete(Member).where(Member.id == bindparam("gone")), {"gone": 1})
        s.commit()
    assert [(e.op, e.pk, dict(e.changes)) for e in got()] == [
        ("update", 2, {"plan": ("free", "pro")}),
        ("update", 3, {"email": ("m3@x", "set@x")}),
        ("delete", 1, {}),
    ]


def test_update_to_the_same_value_sends_nothing(run):
    _bind_all()
    factory, got = run()
    _seed(factory)
    with factory() as s:
        s.execute(update(Member).values(plan="free"))
        s.commit()
    assert got() == []


def test_update_by_primary_key(run):
    _bind_all()
    factory, got = run()
    _seed(factory)
    with factory() as s:
        s.execute(update(Member), [{"id": 3, "plan": "pro"}, {"id": 1, "email": "new@x"}])
        s.commit()
    events = got()
    assert [(e.pk, dict(e.changes)) for e in events] == [
        (3, {"plan": ("free", "pro")}),
        (1, {"email": ("m1@x", "new@x")}),
    ]


def test_delete_where_sends_the_deleted_rows(run):
    _bind_all()
    factory, got = run()
    _seed(factory)
    with factory() as s:
        s.execute(delete(Member).where(Member.id != 2))
        s.commit()
    events = got()
    assert [(e.signal, e.op, e.pk, e.source, e.data["email"]) for e in events] == [
        ("bk_left", "delete", 1, "bulk", "m1@x"),
        ("bk_left", "delete", 3, "bulk", "m3@x"),
    ]


def test_rollback_sends_nothing_and_savepoint_rollback_drops_its_own(run):
    _bind_all()
    factory, got = run()
    _seed(factory)
    with factory() as s:
        s.execute(update(Member).values(plan="gone"))
        s.rollback()
    assert got() == []
    with factory() as s:
        s.execute(update(Member).where(Member.id == 1).values(plan="kept"))
        with s.begin_nested() as nested:
            s.execute(update(Member).where(Member.id == 2).values(plan="dropped"))
            nested.rollback()
        with s.begin_nested():
            s.execute(delete(Member).where(Member.id == 3))
        s.commit()
    assert [(e.op, e.pk) for e in got()] == [("update", 1), ("delete", 3)]


def test_when_conditions_see_the_old_values(run):
    signalbus.bind(Member, "update", "bk_upgraded", when=changed("plan", was="free", to="pro"))
    factory, got = run()
    _seed(factory)
    with factory() as s:
        s.execute(update(Member).where(Member.id == 1).values(plan="trial"))
        s.commit()
        s.execute(update(Member).values(plan="pro"))
        s.commit()
    assert [e.pk for e in got()] == [2, 3]


def test_fields_and_muting_apply(run):
    signalbus.bind(Member, "update", "bk_email", fields=["email"])
    signalbus.bind(Member, "update", "bk_any")
    factory, got = run()
    _seed(factory, 1)
    with factory() as s:
        s.execute(update(Member).values(email="e@x", password_hash="h"))
        s.commit()
        with signalbus.muted("bk_any"):
            s.execute(update(Member).values(email="f@x"))
        s.commit()
        with signalbus.muted():
            s.execute(update(Member).values(email="muted@x"))
        s.commit()
    events = got()
    assert [(e.signal, dict(e.data)) for e in events[::2]] == [
        ("bk_email", {"email": "e@x"}), ("bk_email", {"email": "f@x"})]
    assert events[1].signal == "bk_any"
    assert dict(events[1].changes) == {"email": ("m1@x", "e@x")}  # password_hash redacted
    assert "password_hash" not in events[1].data
    assert len(events) == 3


def test_orm_and_bulk_changes_of_a_row_coalesce(run):
    _bind_all()
    factory, got = run()
    _seed(factory, 2)
    with factory() as s:
        s.add(Member(id=10, email="new@x"))  # flushed by the statement's autoflush
        s.execute(update(Member).where(Member.id == 10).values(plan="pro"))
        s.commit()
    (event,) = got()
    assert (event.op, event.source, event.data["plan"]) == ("insert", "orm", "pro")
    with factory() as s:
        s.execute(update(Member).where(Member.id == 1).values(plan="pro"))
        member = s.get(Member, 1)
        member.plan = "team"
        s.flush()
        s.execute(update(Member).where(Member.id == 2).values(plan="pro"))
        s.delete(s.get(Member, 2))
        s.commit()
    first, second = got()
    assert (first.op, first.source, dict(first.changes)) == (
        "update", "bulk", {"plan": ("free", "team")})
    assert (second.op, second.source, second.pk, second.data["plan"]) == (
        "delete", "bulk", 2, "free")


def test_ten_thousand_rows(run, delivery):
    signalbus.bind(Member, "update", "bk_changed")
    factory, got = run()
    n = 10_000
    with factory() as s, signalbus.muted():
        s.execute(insert(Member), [{"id": i, "email": f"m{i}@x"} for i in range(1, n + 1)])
        s.commit()
    with factory() as s:
        s.execute(update(Member).values(email=Member.email + "!", plan="pro"))
        s.commit()
    events = got()
    assert len(events) == n
    assert [e.pk for e in events] == list(range(1, n + 1))
    for e in events:
        assert dict(e.changes) == {"email": (f"m{e.pk}@x", f"m{e.pk}@x!"),
                                   "plan": ("free", "pro")}
        assert e.source == "bulk"


def _count_statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    return seen


def test_a_model_without_bindings_costs_no_statement(run, tables):
    _bind_all()  # Member is bound, Tag is not
    factory, got = run()
    with factory() as s:
        s.execute(insert(Tag), [{"id": i, "label": "a"} for i in range(5)])
        s.commit()
    seen = _count_statements(tables)
    with factory() as s:
        s.execute(update(Tag).where(Tag.id > 1).values(label="b"))
        s.execute(delete(Tag).where(Tag.id == 0))
        s.commit()
    attached = list(seen)
    seen.clear()
    with Session(tables) as plain:  # no bus attached
        plain.execute(update(Tag).where(Tag.id > 1).values(label="c"))
        plain.execute(delete(Tag).where(Tag.id == 1))
        plain.commit()
    assert attached == seen  # the same statements as without signalbus
    assert not [sql for sql in attached if "SELECT" in sql.upper()]
    assert got() == []


def test_core_statements_stay_invisible(run, tables):
    _bind_all()
    factory, got = run()
    _seed(factory)
    table = Member.__table__
    with factory() as s:
        s.connection().execute(table.update().values(plan="core"))
        s.execute(update(table).where(table.c.id == 1).values(plan="table"))
        s.commit()
    with tables.begin() as conn:
        conn.execute(delete(table).where(table.c.id == 3))
    assert got() == []
    with factory() as s:
        assert s.scalars(select(Member.plan).order_by(Member.id)).all() == ["table", "core"]


def test_upserts(run, tables, caplog):
    _bind_all()
    factory, got = run()
    _seed(factory, 1)
    if tables.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    with factory() as s:
        s.execute(dialect_insert(Member).on_conflict_do_nothing(),
                  [{"id": 1, "email": "again@x"}, {"id": 2, "email": "new@x"}])
        s.commit()
    assert [(e.op, e.pk, e.data["email"]) for e in got()] == [("insert", 2, "new@x")]
    with factory() as s:
        s.execute(dialect_insert(Member).values(id=1, email="again@x")
                  .on_conflict_do_nothing())
        s.commit()
    assert got() == []
    with factory() as s:
        upsert = dialect_insert(Member).values(id=1, email="up@x")
        s.execute(upsert.on_conflict_do_update(index_elements=["id"],
                                               set_={"email": upsert.excluded.email}))
        s.commit()
    assert got() == []
    assert "ON CONFLICT DO UPDATE of Member sends no events" in caplog.text


def test_composite_primary_keys(run):
    signalbus.bind(Seat, "update", "bk_seat_taken")
    signalbus.bind(Seat, "delete", "bk_seat_gone")
    factory, got = run()
    with factory() as s:
        s.add_all(Seat(hall=h, number=n) for h in ("a", "b") for n in (1, 2))
        s.commit()
    with factory() as s:
        s.execute(update(Seat).where(Seat.number == 2).values(holder="ada"))
        s.execute(update(Seat), [{"hall": "a", "number": 1, "holder": "bob"}])
        s.execute(delete(Seat).where(Seat.hall == "b", Seat.number == 1))
        s.commit()
    assert [(e.signal, e.pk, dict(e.changes)) for e in got()] == [
        ("bk_seat_taken", ("a", 2), {"holder": (None, "ada")}),
        ("bk_seat_taken", ("b", 2), {"holder": (None, "ada")}),
        ("bk_seat_taken", ("a", 1), {"holder": (None, "bob")}),
        ("bk_seat_gone", ("b", 1), {}),
    ]


def test_a_trigger_captured_model_is_left_to_its_triggers(run, tables):
    """Bulk capture skips ``capture="trigger"`` bindings (their triggers, not installed
    here, see the statements): no event from bulk capture, no extra statement."""
    signalbus.bind(Tag, "update", "bk_tag_changed", capture="trigger")
    factory, got = run()
    with factory() as s:
        s.execute(insert(Tag), [{"id": i, "label": "a"} for i in range(3)])
        s.commit()
    seen = _count_statements(tables)
    with factory() as s:
        s.execute(update(Tag).values(label="b"))
        s.commit()
    assert not [sql for sql in seen if "SELECT" in sql.upper()]
    assert got() == []
