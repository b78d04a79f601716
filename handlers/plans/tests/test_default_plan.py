"""A user model without a plan column: SIGNALBUS_PLANS_DEFAULT gives every new user its plan."""

from __future__ import annotations

import pytest
import signalbus_plans
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus


def _host(database_url: str, **config: object):
    from conftest import flask_sqlalchemy_config, start_host  # the root conftest

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class Member(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "members"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))

    signalbus_plans.include_in(db.metadata)
    signalbus.bind(Member, "insert", "user_registered")
    app = Flask(__name__)
    app.config.update(flask_sqlalchemy_config(database_url))
    app.config.update(SIGNALBUS_PLUGINS=["plans"], SIGNALBUS_PLUGINS_STRICT=True,
                      SIGNALBUS_PLANS={"free": ["newsletter"], "pro": ["support"]}, **config)
    start_host(app, db, fresh=True)
    return app, db, Member


@pytest.fixture
def member_host(database_url):
    made = []

    def factory(**config: object):
        made.append(_host(database_url, **config))
        return made[-1]

    yield factory
    for app, db, _ in made:
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


def test_default_plan_serves_a_model_without_a_plan_column(member_host, signalbus_capture):
    app, db, Member = member_host(SIGNALBUS_PLANS_DEFAULT="free")
    with app.app_context():
        db.session.add(Member(email="ann@example.com"))
        db.session.commit()
        rows = db.session.execute(select(signalbus_plans.plan_subscriptions)).all()
    assert [(r.user_id, r.service, r.plan, r.active) for r in rows] == [
        ("1", "newsletter", "free", True)]
    signalbus_capture.assert_sent("plan_subscribed", user_id=1, service="newsletter",
                                  plan="free")


def test_without_a_default_the_missing_plan_column_stops_init_app(member_host):
    with pytest.raises(signalbus.PluginError) as info:
        member_host()
    message = str(info.value)
    assert message.startswith(
        "plugin 'plans' needs field(s) 'plan' of signal 'user_registered', but "
        "bind('")
    assert message.endswith(
        "does not put them in the event's data. Member has no column attribute 'plan': add "
        "it to the model, or configure plugin 'plans' not to need it (see its "
        "documentation: a plugin may offer a default).")
    # and the advice works: the plugin's default plan
    member_host(SIGNALBUS_PLANS_DEFAULT="free")
