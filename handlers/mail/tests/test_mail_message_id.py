"""The Message-ID depends only on the event id and the rule: redelivery repeats it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from signalbus_mail import message_id
from signalbus_mail.testing import SMTPServer

from .conftest import Host, make_event


def test_a_redelivered_event_gets_the_same_message_id(host: Host,
                                                      smtp_server: SMTPServer) -> None:
    event = make_event("user_registered", {"email": "ada@example.com"})
    receiver = host.receiver("user_registered")

    receiver(host.User, event=event)
    receiver(host.User, event=event)  # a redelivery (worker retry, replay)

    first, second = smtp_server.messages
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Message-ID"] == message_id(event.id, "user_registered", "example.com")


def test_another_event_or_another_rule_gets_another_message_id() -> None:
    ids = {
        message_id("0d7e1a52-7d6e-4d8a-9d53-2b3f9b0d3a11", "user_registered", "example.com"),
        message_id("0d7e1a52-7d6e-4d8a-9d53-2b3f9b0d3a11", "user_registered_copy", "example.com"),
        message_id("5b9a3f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "user_registered", "example.com"),
    }
    assert len(ids) == 3


def test_the_message_id_is_the_same_in_another_process() -> None:
    # no host name, clock, random or hash-seeded part goes in
    args = ("0d7e1a52-7d6e-4d8a-9d53-2b3f9b0d3a11", "welcome", "example.com")
    code = f"from signalbus_mail import message_id; print(message_id(*{args!r}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == message_id(*args)
    # pinned, so that an upgrade does not change the Message-ID of a pending retry
    assert message_id(*args) == "<431eec48c695579eb9a6859bc2b4f432@example.com>"


def test_the_domain_can_be_configured(make_host: Callable[..., Host],
                                      smtp_server: SMTPServer) -> None:
    host = make_host(SIGNALBUS_MAIL_MESSAGE_ID_DOMAIN="mail.example.net")
    event = make_event("user_registered", {"email": "ada@example.com"})

    host.receiver("user_registered")(host.User, event=event)

    [message] = smtp_server.messages
    assert message["Message-ID"] == message_id(event.id, "user_registered", "mail.example.net")
