"""Through the outbox and the real worker: Retry is retried, the Message-ID is kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from signalbus_mail.testing import SMTPServer

from .conftest import Host


@pytest.mark.signalbus_receiver_errors("log")
def test_a_temporary_refusal_is_retried_with_the_same_message_id(
        make_host: Callable[..., Host], smtp_server: SMTPServer,
        signalbus_drain: Callable[..., Any]) -> None:
    host = make_host(SIGNALBUS_DELIVERY="outbox", SIGNALBUS_MAIL_RULES={
        "team_note": {"signal": "user_registered", "to": ["ok@example.com", "later@example.com"],
                      "template": "welcome"}})
    smtp_server.refuse("later@example.com", "451 4.3.0 Try again later")
    host.register("ada@example.com")
    assert smtp_server.messages == []  # nothing is sent in the committing process

    # the retry falls due 0.5 to 1 s later (equal jitter of a 1 s backoff)
    first = signalbus_drain(host.app, backoff_base=1, backoff_cap=1)
    smtp_server.accept("later@example.com")
    time.sleep(1.05)
    second = signalbus_drain(host.app, backoff_base=1, backoff_cap=1)

    assert (first.retried, first.delivered) == (1, 0)
    assert (second.retried, second.delivered) == (0, 1)
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [
        ("ok@example.com",), ("later@example.com", "ok@example.com")]
    before, after = smtp_server.messages
    assert before["Message-ID"] == after["Message-ID"]


@pytest.mark.signalbus_receiver_errors("log")
def test_a_5xx_recipient_is_dead_at_once(make_host: Callable[..., Host],
                                         smtp_server: SMTPServer,
                                         signalbus_drain: Callable[..., Any]) -> None:
    host = make_host(SIGNALBUS_DELIVERY="outbox")
    smtp_server.refuse("gone@example.com", "550 5.1.1 No such user")
    host.register("gone@example.com")

    stats = signalbus_drain(host.app, backoff_base=0)

    assert (stats.dead, stats.retried, stats.delivered) == (1, 0, 0)
    assert smtp_server.messages == []
