"""signalbus_plans.active_services(user_id): the services a user is subscribed to."""

from __future__ import annotations

import pytest
import signalbus_plans

import signalbus


def test_active_services_in_an_app_context(host):
    ann = host.register("ann@example.com", plan="pro")
    bob = host.register("bob@example.com", plan="free")
    with host.app.app_context():
        assert signalbus_plans.active_services(ann) == {
            "newsletter", "priority-support", "badge-export"}
        assert signalbus_plans.active_services(bob) == {"newsletter"}
        assert signalbus_plans.active_services(str(bob)) == {"newsletter"}  # ids are text
        assert signalbus_plans.active_services(999) == set()


def test_active_services_leaves_out_cancelled_subscriptions(host):
    uid = host.register("ann@example.com", plan="pro")
    host.change_plan(uid, "free")
    with host.app.app_context():
        assert signalbus_plans.active_services(uid) == {"newsletter"}
    host.delete(uid)
    with host.app.app_context():
        assert signalbus_plans.active_services(uid) == set()


def test_active_services_reads_in_the_callers_transaction(host):
    uid = host.register("ann@example.com", plan="free")
    with host.app.app_context():
        t = signalbus_plans.plan_subscriptions
        host.db.session.execute(t.update().values(active=False))  # not committed
        assert signalbus_plans.active_services(uid) == set()
        host.db.session.rollback()
        assert signalbus_plans.active_services(uid) == {"newsletter"}


def test_active_services_with_an_explicit_session(host):
    uid = host.register("ann@example.com", plan="free")
    with host.app.app_context():
        engine = host.db.engine
    from sqlalchemy.orm import Session

    with Session(engine) as session:  # no app context needed
        assert signalbus_plans.active_services(uid, session=session) == {"newsletter"}


def test_active_services_outside_an_app_context_needs_a_session():
    with pytest.raises(signalbus.ConfigurationError) as info:
        signalbus_plans.active_services(1)
    assert str(info.value) == (
        "signalbus_plans.active_services() without session= needs a Flask app context "
        "(of an app whose signalbus loaded the 'plans' plugin); outside Flask, pass "
        "session=."
    )


def test_active_services_on_an_app_without_the_plugin():
    from flask import Flask

    app = Flask(__name__)
    with app.app_context(), pytest.raises(signalbus.ConfigurationError) as info:
        signalbus_plans.active_services(1)
    assert str(info.value).startswith("the 'plans' signalbus plugin is not loaded on this app")
