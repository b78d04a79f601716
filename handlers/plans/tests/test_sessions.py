"""The session the plugin writes with: the host's scoped one, a private one, a sessionmaker."""

from __future__ import annotations

import signalbus_plans
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus


def test_the_idle_host_session_is_used_as_it_is(host):
    plans = host.app.extensions["signalbus_plans"]
    with host.app.app_context():
        with plans.session() as session:
            assert session is host.db.session()
        assert host.db.session().is_active  # not closed: it is the host's


def test_a_host_session_inside_a_transaction_is_left_alone(host):
    plans = host.app.extensions["signalbus_plans"]
    with host.app.app_context():
        host.db.session.begin()
        with plans.session() as session:
            assert session is not host.db.session()
        assert host.db.session().in_transaction()
        host.db.session.rollback()


def test_a_commit_of_another_session_is_written_in_a_private_session(host):
    with host.app.app_context():
        host.db.session.begin()  # the host's scoped session has work in progress
        other = host.db.session.session_factory()
        other.add(host.User(email="ann@example.com", name="Ann", plan="free"))
        other.commit()
        uid = other.scalar(host.db.select(host.User.id))
        other.close()
        host.db.session.rollback()  # the plugin's write is not part of it
    assert host.subscriptions(uid) == {"newsletter": ("free", True)}


def test_plain_sqlalchemy_with_a_sessionmaker(engine, signalbus_capture):
    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))
        plan: Mapped[str | None] = mapped_column(String(20))

    Base.metadata.create_all(engine)
    signalbus_plans.create_all(engine)
    try:
        signalbus.bind(User, "insert", "user_registered")
        signalbus.bind(User, "update", "user_plan_changed", when=signalbus.changed("plan"))
        signalbus.bind(User, "delete", "user_deleted")
        Session = sessionmaker(engine)
        signalbus.SignalBus().attach(Session, config={
            "SIGNALBUS_PLUGINS": ["plans"], "SIGNALBUS_PLUGINS_STRICT": True,
            "SIGNALBUS_PLANS": {"pro": ["newsletter", "priority-support", "badge-export"]},
        })
        with Session() as session:
            user = User(email="ann@example.com", plan="pro")
            session.add(user)
            session.commit()
            uid = user.id
        assert signalbus_capture.names == ["user_registered"] + ["plan_subscribed"] * 3
        with Session() as session:
            assert signalbus_plans.active_services(uid, session=session) == {
                "newsletter", "priority-support", "badge-export"}
    finally:
        signalbus_plans.metadata.drop_all(engine)
        Base.metadata.drop_all(engine)
