"""The Badgeyay example end to end: real SMTP server, real webhook server, real database."""

from __future__ import annotations

import pytest
import signalbus_plans
from sqlalchemy import select

from examples.badgeyay import User, create_app, db, init_db


@pytest.fixture
def app(fsa_config, smtp_server, slack_webhook):
    app = create_app({**fsa_config, **smtp_server.config, **slack_webhook.config})
    init_db(app)
    yield app
    with app.app_context():
        signalbus_plans.plan_subscriptions.drop(db.engine, checkfirst=True)
        db.drop_all()
        db.engine.dispose()


def _subscriptions(app):
    with app.app_context():
        rows = db.session.execute(
            select(signalbus_plans.plan_subscriptions.c.user_id,
                   signalbus_plans.plan_subscriptions.c.service,
                   signalbus_plans.plan_subscriptions.c.active)
        ).all()
    return sorted((int(r.user_id), r.service, r.active) for r in rows)


def test_registration_mail_plans_and_slack(app, smtp_server, slack_webhook, signalbus_capture):
    client = app.test_client()
    ada = client.post("/register", json={"email": "ada@example.com", "name": "Ada",
                                         "plan": "pro"}).json["id"]
    (mail,) = smtp_server.messages
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "Welcome, Ada!"
    assert _subscriptions(app) == [(ada, "badge-export", True), (ada, "newsletter", True),
                                   (ada, "priority-support", True)]
    assert len(slack_webhook.posts) == 1
    assert slack_webhook.posts[0]["text"] == "New user registered: Ada (plan: pro)"
    assert signalbus_capture.names == ["user_registered", "plan_subscribed",
                                       "plan_subscribed", "plan_subscribed"]


def test_plan_change_and_deletion(app, signalbus_capture):
    client = app.test_client()
    uid = client.post("/register", json={"email": "bo@example.com", "name": "Bo",
                                         "plan": "pro"}).json["id"]
    client.post(f"/users/{uid}/plan", json={"plan": "free"})
    event = signalbus_capture.assert_sent("user_plan_changed")
    assert event.changes["plan"] == ("pro", "free")
    assert _subscriptions(app) == [(uid, "badge-export", False), (uid, "newsletter", True),
                                   (uid, "priority-support", False)]
    assert client.delete(f"/users/{uid}").status_code == 204
    assert [s for s in _subscriptions(app) if s[2]] == []
    assert len(signalbus_capture.of("plan_cancelled")) == 3


def test_rolled_back_registration_gets_nothing(app, smtp_server, slack_webhook,
                                               signalbus_capture):
    with app.app_context():
        db.session.add(User(email="ghost@example.com", name="Ghost", plan="pro"))
        db.session.flush()
        db.session.rollback()
    assert smtp_server.messages == []
    assert slack_webhook.posts == []
    assert _subscriptions(app) == []
    assert signalbus_capture.events == []
