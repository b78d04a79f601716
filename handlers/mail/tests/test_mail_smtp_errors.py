"""SMTP failures: down, silent, 4xx → Retry; 5xx on a recipient → Permanent."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
from signalbus_mail.testing import SMTPServer, free_port

from signalbus import Permanent, Retry

from .conftest import Host, make_event

WHERE = "signalbus-mail rule 'user_registered' (user_registered event {id})"


def _send(host: Host, email: str = "ada@example.com") -> tuple[str, object]:
    event = make_event("user_registered", {"email": email})
    return event.id, host.receiver("user_registered")(host.User, event=event)


def test_smtp_down_raises_retry(make_host: Callable[..., Host]) -> None:
    port = free_port()
    host = make_host(MAIL_PORT=port)

    with pytest.raises(Retry) as info:
        _send(host)

    assert info.value.after is None
    assert f"could not talk to SMTP server 127.0.0.1:{port} (timeout 10s): " \
        "ConnectionRefusedError" in str(info.value)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        yield sock.getsockname()[1]


def test_a_silent_server_times_out_with_retry(make_host: Callable[..., Host],
                                              silent_server: int) -> None:
    host = make_host(MAIL_PORT=silent_server, SIGNALBUS_MAIL_TIMEOUT=0.3)

    started = time.monotonic()
    with pytest.raises(Retry) as info:
        _send(host)

    assert time.monotonic() - started < 5
    assert "(timeout 0.3s): SMTPServerDisconnected: Connection unexpectedly closed: timed out" \
        in str(info.value)


def test_the_timeout_defaults_to_ten_seconds(host: Host) -> None:
    assert host.app.config["SIGNALBUS_MAIL_TIMEOUT"] == 10.0
    assert host.app.extensions["signalbus_mail"].timeout == 10.0


@pytest.mark.parametrize("value", [0, -1, None, "soon"])
def test_a_missing_or_non_positive_timeout_is_refused(make_host: Callable[..., Host],
                                                      value: object) -> None:
    from signalbus import PluginError

    with pytest.raises(PluginError) as info:
        make_host(SIGNALBUS_MAIL_TIMEOUT=value, SIGNALBUS_PLUGINS_STRICT=True)
    assert f"SIGNALBUS_MAIL_TIMEOUT is {value!r}; it must be a positive number of seconds" \
        in str(info.value)


def test_a_5xx_on_the_recipient_raises_permanent(host: Host, smtp_server: SMTPServer) -> None:
    smtp_server.refuse("gone@example.com", "550 5.1.1 No such user")

    with pytest.raises(Permanent) as info:
        _send(host, "gone@example.com")

    assert "refused recipient(s) gone@example.com (550 5.1.1 No such user)" in str(info.value)
    assert smtp_server.messages == []


def test_a_4xx_on_the_recipient_raises_retry(host: Host, smtp_server: SMTPServer) -> None:
    smtp_server.refuse("busy@example.com", "450 4.2.1 Mailbox busy, try later")

    with pytest.raises(Retry) as info:
        _send(host, "busy@example.com")

    assert "temporarily refused recipient(s) busy@example.com (450 4.2.1 Mailbox busy, " \
        "try later); will retry (with the same Message-ID)" in str(info.value)


def test_a_5xx_on_one_of_several_recipients_is_permanent(make_host: Callable[..., Host],
                                                         smtp_server: SMTPServer) -> None:
    host = make_host(SIGNALBUS_MAIL_RULES={
        "issue_raised": {"to": "@admins", "template": "issue_raised"}})
    smtp_server.refuse("ops@example.com", "550 5.1.1 No such user")
    receiver = host.receiver("issue_raised")

    with pytest.raises(Permanent) as info:
        receiver(None, event=make_event("issue_raised", {"title": "Disk full"}))

    assert "refused recipient(s) ops@example.com (550 5.1.1 No such user) (the other " \
        "recipients got the mail)" in str(info.value)
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [("lead@example.com",)]
