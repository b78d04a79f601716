"""Delivery follows the root transaction: commit, rollback, SAVEPOINTs, coalescing, order."""

from __future__ import annotations

import pytest

import signalbus


@pytest.fixture
def user_signals(models, recorder):
    signalbus.bind(models.User, "insert", "user_registered")
    signalbus.bind(models.User, "update", "user_updated")
    signalbus.bind(models.User, "delete", "user_deleted")
    return recorder.listen("user_registered", "user_updated", "user_deleted")


def test_commit_delivers_after_commit(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(email="a@example.com"))
        s.flush()
        assert user_signals.calls == []  # flushed is not committed
        s.commit()
    (event,) = user_signals.of("user_registered")
    assert event.op == "insert"
    assert event.data["email"] == "a@example.com"
    assert event.model.endswith(":models.<locals>.User")
    assert event.source == "orm"
    assert event.attempt == 1
    assert event.occurred_at.tzinfo is not None


def test_rollback_delivers_nothing(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(email="a@example.com"))
        s.flush()
        s.rollback()
    with Session() as s:
        s.add(models.User(email="b@example.com"))
        s.flush()
    # closing a session with an open transaction rolls it back
    assert user_signals.calls == []


def test_savepoint_rolled_back_inside_committed_transaction(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(email="kept@example.com"))
        sp = s.begin_nested()
        s.add(models.User(email="dropped@example.com"))
        s.flush()
        sp.rollback()
        s.commit()
    assert [e.data["email"] for e in user_signals.events] == ["kept@example.com"]


def test_savepoint_released_then_outer_rollback(bus, Session, models, user_signals):
    with Session() as s:
        with s.begin_nested():
            s.add(models.User(email="inner@example.com"))
        assert user_signals.calls == []  # released, waiting for the root
        s.rollback()
    assert user_signals.calls == []
    with Session() as s:
        assert s.query(models.User).count() == 0  # the database agrees


def test_savepoint_released_then_outer_commit(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(email="outer@example.com"))
        with s.begin_nested():
            s.add(models.User(email="inner@example.com"))
            with s.begin_nested() as deeper:
                s.add(models.User(email="deepest@example.com"))
                s.flush()
                deeper.rollback()
        s.commit()
    assert [e.data["email"] for e in user_signals.events] == [
        "outer@example.com",
        "inner@example.com",
    ]


def test_insert_then_update_is_one_insert_with_final_data(bus, Session, models, user_signals):
    with Session() as s:
        u = models.User(email="a@example.com", plan="free")
        s.add(u)
        s.flush()
        u.plan = "pro"
        s.flush()
        u.name = "Ada"
        s.commit()
    assert user_signals.names == ["user_registered"]
    assert user_signals.events[0].data["plan"] == "pro"
    assert user_signals.events[0].data["name"] == "Ada"


def test_insert_then_delete_is_nothing(bus, Session, models, user_signals):
    with Session() as s:
        u = models.User(email="a@example.com")
        s.add(u)
        s.flush()
        s.delete(u)
        s.commit()
    assert user_signals.calls == []


def test_update_then_update_is_one_update_from_first_old_to_last_new(
    bus, Session, models, user_signals
):
    with Session() as s:
        s.add(models.User(email="a@example.com", plan="free"))
        s.commit()
        user_signals.calls.clear()
        u = s.query(models.User).one()
        u.plan = "pro"
        s.flush()
        u.plan = "team"
        s.commit()
    (event,) = user_signals.events
    assert event.op == "update"
    assert dict(event.changes) == {"plan": ("free", "team")}
    assert event.data["plan"] == "team"


def test_changed_and_changed_back_is_no_update(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(email="a@example.com", plan="free"))
        s.commit()
        user_signals.calls.clear()
        u = s.query(models.User).one()
        u.plan = "pro"
        s.flush()
        u.plan = "free"
        s.commit()
    assert user_signals.calls == []


def test_update_then_delete_is_delete(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(email="a@example.com", plan="free"))
        s.commit()
        user_signals.calls.clear()
        u = s.query(models.User).one()
        uid = u.id
        u.plan = "pro"
        s.flush()
        s.delete(u)
        s.commit()
    (event,) = user_signals.events
    assert event.signal == "user_deleted"
    assert event.pk == uid
    assert event.data["email"] == "a@example.com"


def test_delete_then_insert_of_the_same_key_is_update(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(id=7, email="old@example.com"))
        s.commit()
        user_signals.calls.clear()
        s.delete(s.get(models.User, 7))
        s.flush()
        s.add(models.User(id=7, email="new@example.com"))
        s.commit()
    (event,) = user_signals.events
    assert event.signal == "user_updated"
    assert event.changes["email"] == ("old@example.com", "new@example.com")


def test_old_values_survive_expire_on_commit(bus, Session, models, user_signals):
    with Session() as s:  # expire_on_commit=True is sessionmaker's default
        u = models.User(email="a@example.com", plan="free")
        s.add(u)
        s.commit()
        user_signals.calls.clear()
        u.plan = "pro"  # u was expired by the commit
        s.commit()
    (event,) = user_signals.events
    assert dict(event.changes) == {"plan": ("free", "pro")}


def test_order_is_first_change_order_across_flushes(bus, Session, models, user_signals):
    with Session() as s:
        a = models.User(email="a@example.com")
        b = models.User(email="b@example.com")
        s.add_all([a, b])
        s.commit()
        user_signals.calls.clear()
        b.name = "B"
        s.flush()
        s.add(models.User(email="c@example.com"))
        a.name = "A"
        s.flush()
        b.name = "BB"  # b was first changed before a: stays first
        s.commit()
    assert [(e.signal, e.data["email"]) for e in user_signals.events] == [
        ("user_updated", "b@example.com"),
        ("user_registered", "c@example.com"),
        ("user_updated", "a@example.com"),
    ]


def test_inserts_of_one_flush_in_add_order(bus, Session, models, user_signals):
    with Session() as s:
        for i in (3, 1, 2):
            s.add(models.User(id=i, email=f"{i}@example.com"))
        s.commit()
    assert [e.pk for e in user_signals.events] == [3, 1, 2]


def test_update_with_no_net_change_sends_nothing(bus, Session, models, user_signals):
    with Session() as s:
        s.add(models.User(email="a@example.com", plan="free"))
        s.commit()
        user_signals.calls.clear()
        u = s.query(models.User).one()
        u.plan = "free"
        s.commit()
    assert user_signals.calls == []


def test_unattached_session_captures_nothing(bus, engine, models, user_signals):
    from sqlalchemy.orm import Session as PlainSession

    with PlainSession(engine) as s:
        s.add(models.User(email="a@example.com"))
        s.commit()
    assert user_signals.calls == []


def test_scoped_session(engine, models, user_signals):
    from sqlalchemy.orm import scoped_session, sessionmaker

    scoped = scoped_session(sessionmaker(engine))
    signalbus.SignalBus().attach(scoped, plugins=False)
    scoped.add(models.User(email="a@example.com"))
    scoped.commit()
    scoped.remove()
    assert user_signals.names == ["user_registered"]


def test_session_instance(engine, models, user_signals):
    from sqlalchemy.orm import Session as PlainSession

    with PlainSession(engine) as s:
        signalbus.SignalBus().attach(s, plugins=False)
        s.add(models.User(email="a@example.com"))
        s.commit()
    assert user_signals.names == ["user_registered"]
