"""The smtp_server fixture: a real server on 127.0.0.1, parsed messages, app config."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from flask import Flask
from flask_mail import Mail, Message
from signalbus_mail.testing import SMTPServer


def test_it_receives_and_parses_real_smtp(smtp_server: SMTPServer) -> None:
    assert smtp_server.host == "127.0.0.1" and smtp_server.port > 0
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        client.sendmail("a@example.com", ["b@example.com"],
                        b"Subject: hi\r\nTo: b@example.com\r\n\r\nbody\r\n")

    [message] = smtp_server.messages
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == "hi"
    assert message.get_content() == "body\n"
    assert smtp_server.envelopes[0].rcpt_tos == ("b@example.com",)
    smtp_server.clear()
    assert smtp_server.messages == []


def test_configure_points_flask_mail_at_it_even_after_mail_init(
        smtp_server: SMTPServer) -> None:
    app = Flask("fixture_app")
    app.config.update(TESTING=True, MAIL_DEFAULT_SENDER="a@example.com")
    Mail(app)  # set up first, while it would still suppress sending (TESTING)

    smtp_server.configure(app)
    with app.app_context():
        app.extensions["mail"].send(Message("hello", recipients=["b@example.com"], body="x"))

    assert app.config["MAIL_PORT"] == smtp_server.port
    assert smtp_server.config["MAIL_SERVER"] == "127.0.0.1"
    assert [m["Subject"] for m in smtp_server.messages] == ["hello"]


def test_refuse_answers_rcpt_with_the_given_reply(smtp_server: SMTPServer) -> None:
    smtp_server.refuse("Nobody@Example.com", "550 5.1.1 nobody here")
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=5) as client:
        refused = client.sendmail("a@example.com", ["nobody@example.com", "b@example.com"],
                                  b"Subject: x\r\n\r\ny\r\n")

    assert refused == {"nobody@example.com": (550, b"5.1.1 nobody here")}
    assert smtp_server.envelopes[0].rcpt_tos == ("b@example.com",)
