"""Settings errors: each names the key and the fix."""

from __future__ import annotations

import pytest
import signalbus_plans
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus


def test_missing_plans_setting(make_host):
    with pytest.raises(signalbus.PluginError) as info:
        make_host(SIGNALBUS_PLANS=None)
    assert "SIGNALBUS_PLANS, a mapping of plan name to the list of services" in str(info.value)
    assert info.value.plugin == "plans"


def test_without_strict_the_failure_is_recorded_and_the_app_starts(make_host, caplog):
    host = make_host(SIGNALBUS_PLANS=None, SIGNALBUS_PLUGINS_STRICT=False)
    record = host.bus.runtime(host.app).plugins[0]
    assert (record.name, record.status) == ("plans", "failed")
    assert record.error.startswith("NotConfigured: signalbus-plans needs SIGNALBUS_PLANS")
    uid = host.register("ann@example.com", plan="pro")
    assert host.rows(uid) == []


@pytest.mark.parametrize(("config", "message"), [
    ({"SIGNALBUS_PLANS": ["free"]},
     "SIGNALBUS_PLANS must be a mapping of plan name to a list of services, not list."),
    ({"SIGNALBUS_PLANS": {"free": "newsletter"}},
     "SIGNALBUS_PLANS['free'] must be a list of service names (non-empty strings), "
     "not 'newsletter'."),
    ({"SIGNALBUS_PLANS": {"free": ["newsletter"]}, "SIGNALBUS_PLANS_DEFAULT": "pro"},
     "SIGNALBUS_PLANS_DEFAULT is 'pro', which is not a plan of SIGNALBUS_PLANS "
     "(known plans: 'free')."),
    ({"SIGNALBUS_PLANS": {"free": []}, "SIGNALBUS_PLANS_FIELD": ""},
     "SIGNALBUS_PLANS_FIELD must be the name of a field of the user events, not ''."),
])
def test_bad_settings(config, message):
    with pytest.raises(signalbus.ConfigurationError) as info:
        signalbus_plans.Settings.from_config(config)
    assert str(info.value) == message


def test_a_binding_that_leaves_out_the_plan_is_refused_at_init_app():
    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class Member(db.Model):  # type: ignore[name-defined,misc]
        id: Mapped[int] = mapped_column(primary_key=True)
        plan: Mapped[str]

    signalbus.bind(Member, "insert", "user_registered", exclude=["plan"])
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite://", SIGNALBUS_PLUGINS=["plans"],
                      SIGNALBUS_PLANS={"free": []})
    db.init_app(app)
    with pytest.raises(signalbus.PluginError) as info:
        signalbus.SignalBus().init_app(app, db=db)
    assert str(info.value).startswith(
        "plugin 'plans' needs field(s) 'plan' of signal 'user_registered', but ")


def test_without_a_database_session_the_plugin_refuses_to_load():
    app = Flask(__name__)
    app.config.update(SIGNALBUS_PLUGINS=["plans"], SIGNALBUS_PLUGINS_STRICT=True,
                      SIGNALBUS_PLANS={"free": []})
    with pytest.raises(signalbus.PluginError) as info:
        signalbus.SignalBus().init_app(app)
    assert "signalbus-plans writes to the database and got no session: call " \
           "init_app(app, db=db)" in str(info.value)
