"""The YVIH example end to end: an issue mails the admins and posts to Slack."""

from __future__ import annotations

import pytest

from examples.yvih import create_app, db, init_db


@pytest.fixture
def app(fsa_config, smtp_server, slack_webhook):
    app = create_app({**fsa_config, **smtp_server.config, **slack_webhook.config})
    init_db(app)
    yield app
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def test_issue_raised_mails_admins_and_posts(app, smtp_server, slack_webhook, signalbus_capture):
    client = app.test_client()
    issue = client.post("/issues", json={"title": "Login broken", "reporter": "eve@example.com",
                                         "description": "500 on /login"}).json["id"]
    event = signalbus_capture.assert_sent("issue_raised", title="Login broken")
    assert event.pk == issue
    assert event.data["created_at"]  # the server default is in the payload
    (mail,) = smtp_server.messages
    assert mail["To"] == "admins@yvih.example"
    assert "Login broken" in mail.get_body(("plain",)).get_content()
    (post,) = slack_webhook.posts
    assert "Login broken" in post["text"]
    client.post(f"/issues/{issue}/close")
    signalbus_capture.assert_sent("issue_closed")
    assert len(smtp_server.messages) == 1  # no rule for issue_closed
