"""Per-row coalescing of the hard cases: primary-key changes, delete and re-add of a key.

Each test is a sequence a real application made (Badgeyay gives a row a new uuid key on
every save) or the property test found; inline and outbox delivery, SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import MetaData, String
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox
from signalbus import changed
from signalbus.bus import Runtime


class Base(DeclarativeBase):
    pass


class File(Base):
    __tablename__ = "co_files"
    filename: Mapped[str] = mapped_column(String(40), primary_key=True)
    size: Mapped[int] = mapped_column(default=0)


class Account(Base):
    __tablename__ = "co_accounts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    plan: Mapped[str] = mapped_column(String(20))


class Doc(Base):
    __tablename__ = "co_docs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = mapped_column(String(40))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "doc"}


class Note(Doc):
    __mapper_args__ = {"polymorphic_identity": "note"}


@pytest.fixture
def run(mode_tables: Callable[[MetaData], Engine], attach_recording: Callable[..., Any]
        ) -> Callable[[], tuple[Runtime, Callable[[], list[tuple[Any, ...]]]]]:
    """Attach a bus (after the test's bindings); returns it and a function reading what
    was delivered as ``(signal, op, pk, changes)`` tuples."""
    engine = mode_tables(Base.metadata)

    def start() -> tuple[Runtime, Callable[[], list[tuple[Any, ...]]]]:
        _factory, delivered = attach_recording(engine)

        def got() -> list[tuple[Any, ...]]:
            return [(e.signal, e.op, e.pk, {k: tuple(v) for k, v in e.changes.items()}
                     if e.op == "update" else dict(e.data))
                    for e in delivered()]

        return delivered.runtime, got

    return start


def _bind_files() -> None:
    signalbus.bind(File, "insert", "co_file_added")
    signalbus.bind(File, "update", "co_file_changed")
    signalbus.bind(File, "delete", "co_file_removed")


def test_insert_then_key_change_is_one_insert_with_the_final_key(run):
    _bind_files()
    runtime, got = run()
    with runtime.session_factory() as s:
        f = File(filename="a.csv")
        s.add(f)
        s.flush()
        f.filename = "b.csv"
        s.commit()
    assert got() == [("co_file_added", "insert", "b.csv", {"filename": "b.csv", "size": 0})]


def test_two_key_changes_are_one_update_from_first_to_last(run):
    _bind_files()
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(File(filename="a.csv"))
        s.commit()
    got()
    with runtime.session_factory() as s:
        f = s.get(File, "a.csv")
        f.filename = "b.csv"
        s.flush()
        f.filename = "c.csv"
        s.flush()
        f.size = 3
        s.commit()
    assert got() == [("co_file_changed", "update", "c.csv",
                      {"filename": ("a.csv", "c.csv"), "size": (0, 3)})]


def test_key_change_then_delete_is_a_delete_of_the_committed_row(run):
    _bind_files()
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(File(filename="a.csv", size=1))
        s.commit()
    got()
    with runtime.session_factory() as s:
        f = s.get(File, "a.csv")
        f.filename = "b.csv"
        f.size = 2
        s.flush()
        s.delete(f)
        s.commit()
    assert got() == [("co_file_removed", "delete", "a.csv", {"filename": "a.csv", "size": 1})]


def test_key_change_inside_released_savepoint_merges_with_the_insert(run):
    _bind_files()
    runtime, got = run()
    with runtime.session_factory() as s:
        f = File(filename="a.csv")
        s.add(f)
        with s.begin_nested():
            f.filename = "b.csv"
        s.commit()
    assert got() == [("co_file_added", "insert", "b.csv", {"filename": "b.csv", "size": 0})]


def _account(s: Any) -> None:
    s.add(Account(id="uid1", plan="free"))
    s.commit()


def test_delete_and_re_add_in_one_flush_is_an_update_from_the_old_values(run):
    signalbus.bind(Account, "insert", "co_account_added")
    signalbus.bind(Account, "update", "co_account_updated")
    signalbus.bind(Account, "update", "co_account_upgraded", when=changed("plan", was="free"))
    runtime, got = run()
    with runtime.session_factory() as s:
        _account(s)
    got()
    with runtime.session_factory() as s:
        s.delete(s.get(Account, "uid1"))
        s.add(Account(id="uid1", plan="pro"))  # SQLAlchemy writes one UPDATE (row switch)
        s.commit()
    assert got() == [
        ("co_account_updated", "update", "uid1", {"plan": ("free", "pro")}),
        ("co_account_upgraded", "update", "uid1", {"plan": ("free", "pro")}),
    ]


def test_delete_and_re_add_of_expired_row_in_one_flush_reads_the_committed_row(run):
    signalbus.bind(Account, "update", "co_account_upgraded", when=changed("plan", was="free"))
    runtime, got = run()
    with runtime.session_factory() as s:
        _account(s)
        s.delete(s.get(Account, "uid1"))  # expired by the commit: nothing loaded yet
        s.add(Account(id="uid1", plan="pro"))
        s.commit()
    assert got() == [("co_account_upgraded", "update", "uid1", {"plan": ("free", "pro")})]


@pytest.mark.parametrize("flush_between", [True, False])
def test_only_update_bindings_see_delete_and_re_insert(run, flush_between):
    signalbus.bind(Account, "update", "co_account_updated")
    runtime, got = run()
    with runtime.session_factory() as s:
        _account(s)
    with runtime.session_factory() as s:
        s.delete(s.get(Account, "uid1"))
        if flush_between:
            s.flush()
        s.add(Account(id="uid1", plan="pro"))
        s.commit()
    assert got() == [("co_account_updated", "update", "uid1", {"plan": ("free", "pro")})]


def test_only_insert_binding_gets_the_values_of_a_later_flush(run):
    signalbus.bind(Account, "insert", "co_account_added")
    runtime, got = run()
    with runtime.session_factory() as s:
        a = Account(id="uid1", plan="free")
        s.add(a)
        s.flush()
        a.plan = "pro"
        s.commit()
    assert got() == [("co_account_added", "insert", "uid1", {"id": "uid1", "plan": "pro"})]


def test_re_added_object_keeps_the_replaced_rows_unset_columns(run):
    # found by the property test: SQLAlchemy's UPDATE for a re-added key writes only the
    # attributes the new object set, so the rest of the row is the old row's
    signalbus.bind(File, "update", "co_file_changed")
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(File(filename="a.csv", size=5))
        s.commit()
    with runtime.session_factory() as s:
        s.delete(s.get(File, "a.csv"))
        s.add(File(filename="a.csv"))  # size left unset
        s.commit()
    assert got() == []  # the row is as it was: no change
    with runtime.session_factory() as s:
        assert s.get(File, "a.csv").size == 5


def test_re_added_object_then_deleted_is_the_delete_of_the_committed_row(run):
    # found by the property test: after the row switch SQLAlchemy's object read None for
    # the columns it never set, so the later delete carried None instead of the row
    signalbus.bind(File, "delete", "co_file_removed")
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(File(filename="a.csv", size=5))
        s.commit()
    with runtime.session_factory() as s:
        s.delete(s.get(File, "a.csv"))
        new = File(filename="a.csv")
        s.add(new)
        s.flush()
        assert new.size == 5  # what the row holds
        s.delete(new)
        s.commit()
    assert got() == [("co_file_removed", "delete", "a.csv", {"filename": "a.csv", "size": 5})]


def test_update_then_delete_and_re_add_back_to_the_old_value_is_no_change(run):
    """Found by the property test: size 0 → 5 (flushed by begin_nested), then the row is
    deleted and a new one with the old size added under its key. The net change of size is
    none; the first update's value (5) must not stand in for the re-added row's."""
    signalbus.bind(File, "update", "co_file_sized", fields=["size"])
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(File(filename="a.csv", size=0))
        s.commit()
    got()
    with runtime.session_factory() as s:
        a = s.get(File, "a.csv")
        s.expire(a)
        a.size = 5
        s.begin_nested()  # flushes the update in the outer transaction
        s.delete(a)
        s.flush()
        s.add(File(filename="a.csv", size=0))
        s.commit()
    assert got() == []


def test_re_added_object_given_a_new_key_reads_its_unset_columns_by_the_new_key(run):
    """Found by the property test's long profile: after a row switch the re-added
    object's unset columns are expired (the row kept its values); a later key change of
    it needs them for its event, and loading them through the object asked for the old
    key, which the flush's UPDATE had already moved (ObjectDeletedError in the commit)."""
    _bind_files()
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(File(filename="a.csv", size=5))
        s.commit()
    got()
    with runtime.session_factory() as s:
        s.delete(s.get(File, "a.csv"))
        new = File(filename="a.csv")  # size left unset: the row's 5 stays
        s.add(new)
        s.flush()
        new.filename = "b.csv"
        s.commit()
        assert new.size == 5  # the object loads by its new identity after the flush
    assert got() == [("co_file_changed", "update", "b.csv",
                      {"filename": ("a.csv", "b.csv")})]


def test_expired_column_of_a_row_given_a_new_key_is_read_by_the_new_key(run):
    _bind_files()
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(File(filename="a.csv", size=5))
        s.commit()
    got()
    with runtime.session_factory() as s:
        a = s.get(File, "a.csv")
        s.expire(a, ["size"])
        a.filename = "b.csv"
        s.commit()
    assert got() == [("co_file_changed", "update", "b.csv",
                      {"filename": ("a.csv", "b.csv")})]


@pytest.mark.parametrize("cls", [Doc, Note])
def test_an_expired_attribute_set_has_its_committed_value_as_old(run, cls):
    """Active history (turned on for the bound class and its subclasses) loads the
    committed value of an expired attribute when it is set: the old value is not None."""
    signalbus.bind(Doc, "update", "co_doc_retitled", when=changed("title", was="first"))
    runtime, got = run()
    _retitle_expired(runtime, cls)
    assert got() == [("co_doc_retitled", "update", "d1", {"title": ("first", "second")})]


def _retitle_expired(runtime: Runtime, cls: type[Doc]) -> None:
    """Commit a ``cls`` row titled "first", then expire it and retitle it "second"."""
    with runtime.session_factory() as s:
        s.add(cls(id="d1", title="first"))
        s.commit()
    with runtime.session_factory() as s:
        doc = s.get(Doc, "d1")
        assert type(doc) is cls
        s.expire(doc)
        doc.title = "second"
        s.commit()


def test_a_subclass_mapped_after_the_binding_took_effect_has_active_history(run):
    """A subclass mapped after capture turned active history on for its base (at the
    base's first flush) copies it from the base's attributes."""
    signalbus.bind(Doc, "update", "co_doc_renamed", when=changed("title", was="first"))
    runtime, got = run()
    with runtime.session_factory() as s:
        s.add(Doc(id="d0", title="first"))
        s.commit()  # the first flush: active history turned on for Doc

    n = len(Doc.__subclasses__())  # one class per run of the test, each of its own name
    late_note = type(f"LateNote{n}", (Doc,), {  # mapped now, after that
        "__module__": __name__, "__mapper_args__": {"polymorphic_identity": f"late-{n}"}})
    _retitle_expired(runtime, late_note)
    assert got() == [("co_doc_renamed", "update", "d1", {"title": ("first", "second")})]
