"""End to end: a committed change sends the rule's mail through a real SMTP server."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from signalbus_mail.testing import SMTPServer, free_port

from signalbus import Retry
from signalbus.testing import SignalCapture

from .conftest import Host, make_event


def test_registered_user_gets_the_welcome_mail(host: Host, smtp_server: SMTPServer,
                                               signalbus_capture: SignalCapture) -> None:
    host.register("ada@example.com", name="Ada")

    event = signalbus_capture.assert_sent("user_registered", email="ada@example.com")
    [envelope] = smtp_server.envelopes
    assert envelope.mail_from == "noreply@example.com"
    assert envelope.rcpt_tos == ("ada@example.com",)
    message = envelope.message
    assert message["To"] == "ada@example.com"
    assert message["From"] == "Signalbus <noreply@example.com>"
    assert message["Subject"] == "Welcome, Ada!"
    text = message.get_body(("plain",)).get_content()
    assert "your account for ada@example.com is ready" in text
    html = message.get_body(("html",)).get_content()
    assert "<strong>ada@example.com</strong>" in html
    assert message["Message-ID"].endswith("@example.com>")
    assert event.signal == "user_registered"


def test_issue_raised_mails_every_admin(host: Host, smtp_server: SMTPServer) -> None:
    with host.app.app_context():
        host.bus.emit("issue_raised", {"title": "Printer on fire", "severity": "high"})

    [envelope] = smtp_server.envelopes
    assert sorted(envelope.rcpt_tos) == ["lead@example.com", "ops@example.com"]
    message = envelope.message
    assert message["Subject"] == "New issue: Printer on fire"
    assert sorted(a.addr_spec for a in message["To"].addresses) == [
        "lead@example.com", "ops@example.com"]
    assert "Lead Admin" in [a.display_name for a in message["To"].addresses]
    text = message.get_body(("plain",)).get_content()
    assert "severity: high" in text
    assert "title: Printer on fire" in text


def test_a_rolled_back_registration_sends_nothing(host: Host, smtp_server: SMTPServer) -> None:
    with host.app.app_context():
        host.db.session.add(host.User(email="ghost@example.com", name="Ghost"))
        host.db.session.flush()
        host.db.session.rollback()
    host.register("real@example.com")

    assert [e.rcpt_tos for e in smtp_server.envelopes] == [("real@example.com",)]


def test_delivery_outside_an_app_context_pushes_the_apps_context(
        host: Host, smtp_server: SMTPServer) -> None:


    receiver = host.receiver("user_registered")
    receiver(host.User, event=make_event("user_registered", {"email": "bo@example.com"}))

    assert [m["To"] for m in smtp_server.messages] == ["bo@example.com"]


@pytest.mark.signalbus_receiver_errors("log")
def test_inline_delivery_logs_a_retry_and_keeps_the_commit(
        make_host: Callable[..., Host], smtp_server: SMTPServer, caplog: pytest.LogCaptureFixture,
        signalbus_capture: SignalCapture) -> None:
    host = make_host(MAIL_PORT=free_port())
    with caplog.at_level(logging.ERROR, logger="signalbus"):
        user_id = host.register("cy@example.com")

    with host.app.app_context():
        assert host.db.session.get(host.User, user_id) is not None
    signalbus_capture.assert_sent("user_registered", email="cy@example.com")
    [record] = [r for r in caplog.records if r.name == "signalbus"]
    assert "receiver signalbus_mail:user_registered failed on user_registered" in record.message
    assert record.exc_info is not None and isinstance(record.exc_info[1], Retry)
    assert smtp_server.messages == []
