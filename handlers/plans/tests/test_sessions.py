"""The session the plugin writes with: the host's scoped one, a private one, a sessionmaker."""

from __future__ import annotations

import signalbus_plans
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus


def test_the_plugin_writes_through_a_new_session_of_the_host_factory(host):
    plans = host.app.extensions["signalbus_plans"]
    with host.app.app_context():
        with plans.session() as session:
            assert session is not host.db.session()
            assert isinstance(session, type(host.db.session()))  # Flask-SQLAlchemy's class
            assert session.get_bind() is host.db.engine
        assert host.db.session().is_active  # the host's session is untouched


def test_the_hosts_unfinished_work_is_not_committed_by_the_plugin(host):
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


def test_a_host_commit_through_a_begin_block(host, signalbus_capture):
    """Receivers run inside the block's exit, where the host's session refuses more work."""
    with host.app.app_context():
        with host.db.session.begin():
            user = host.User(email="ann@example.com", name="Ann", plan="pro")
            host.db.session.add(user)
        uid = user.id  # the host keeps using its session after the plugin's commit
        assert host.db.session.get(host.User, uid).email == "ann@example.com"
    assert signalbus_capture.names == ["user_registered"] + ["plan_subscribed"] * 3
    assert set(host.subscriptions(uid)) == {"newsletter", "priority-support", "badge-export"}
