"""Every header value is checked; a bad one raises Permanent naming the field, nothing sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from signalbus_mail.testing import SMTPServer

from signalbus import Permanent

from .conftest import Host, make_event

BREAKS = ["\r\n", "\n", "\r", "\x0b", "\x0c", "\x85", "\u2028", "\u2029", "\x00", "\x1e"]


def _fail(host: Host, rule: str, data: dict[str, object]) -> str:
    event = make_event(rule, data)
    with pytest.raises(Permanent) as info:
        host.receiver(rule)(host.User, event=event)
    return str(info.value)


@pytest.mark.parametrize("brk", BREAKS, ids=repr)
def test_a_line_break_in_the_subject_is_refused(host: Host, smtp_server: SMTPServer,
                                                brk: str) -> None:
    message = _fail(host, "user_registered", {
        "email": "ada@example.com", "name": f"Ada{brk}Bcc: victim@example.org"})

    assert "subject contains a line break or control character (header injection " \
        "refused); no mail sent" in message
    assert smtp_server.messages == []


@pytest.mark.parametrize("address", [
    "ada@example.com, eve@example.org",
    "ada@example.com\r\nBcc: eve@example.org",
    "Ada <ada@example.com>",
    "ada@example.com eve@example.org",
    "not-an-address",
])
def test_a_recipient_field_holding_anything_but_one_address_is_refused(
        host: Host, smtp_server: SMTPServer, address: str) -> None:
    message = _fail(host, "user_registered", {"email": address, "name": None})

    assert "recipient (data field 'email')" in message
    assert "no mail sent" in message
    assert smtp_server.messages == []


def test_the_display_name_is_checked_on_its_own(make_host: Callable[..., Host],
                                                smtp_server: SMTPServer, app_root: Path
                                                ) -> None:
    templates = app_root / "templates" / "signalbus_mail"
    templates.mkdir(parents=True)
    (templates / "plain.subject.txt").write_text("Hello")
    (templates / "plain.txt").write_text("Body")
    host = make_host(SIGNALBUS_MAIL_RULES={"user_registered": {
        "to": "email", "name": "name", "template": "plain"}})

    message = _fail(host, "user_registered", {
        "email": "ada@example.com", "name": "Ada\nBcc: eve@example.org"})

    assert "display name of recipient (data field 'email') contains a line break" in message
    assert smtp_server.messages == []


def test_an_extra_header_value_is_checked(make_host: Callable[..., Host],
                                          smtp_server: SMTPServer) -> None:
    host = make_host(SIGNALBUS_MAIL_RULES={"user_registered": {
        "to": "email", "template": "welcome", "headers": {"X-Plan": "{{ data.plan }}"}}})

    message = _fail(host, "user_registered", {
        "email": "ada@example.com", "plan": "pro\r\nBcc: eve@example.org"})

    assert "header 'X-Plan' contains a line break or control character" in message
    assert smtp_server.messages == []


@pytest.mark.parametrize("name", ["Bcc", "to", "Message-ID", "X Bad", "X:Bad"])
def test_extra_header_names_that_are_reserved_or_invalid_are_refused(
        make_host: Callable[..., Host], smtp_server: SMTPServer, name: str) -> None:
    host = make_host(SIGNALBUS_MAIL_RULES={"user_registered": {
        "to": "email", "template": "welcome", "headers": {name: "x"}}})

    message = _fail(host, "user_registered", {"email": "ada@example.com"})

    assert f"extra header {'name ' if ' ' in name or ':' in name else ''}{name!r}" in message
    assert smtp_server.messages == []


def test_a_bad_literal_recipient_in_a_rule_is_refused(make_host: Callable[..., Host],
                                                      smtp_server: SMTPServer) -> None:
    host = make_host(SIGNALBUS_MAIL_RULES={"user_registered": {
        "to": ["ok@example.com"], "cc": ["a@example.com,b@example.com"],
        "template": "welcome"}})

    message = _fail(host, "user_registered", {"email": "x@example.com"})

    assert "cc is not a single email address" in message
    assert smtp_server.messages == []


def test_a_bad_sender_is_refused(make_host: Callable[..., Host], smtp_server: SMTPServer) -> None:
    host = make_host(MAIL_DEFAULT_SENDER="Ops\r\nBcc: eve@example.org <ops@example.com>")

    message = _fail(host, "user_registered", {"email": "ada@example.com"})

    assert "sender contains a line break or control character" in message
    assert smtp_server.messages == []


def test_an_empty_recipient_field_is_permanent(host: Host, smtp_server: SMTPServer) -> None:
    message = _fail(host, "user_registered", {"email": None})

    assert "recipient (data field 'email') is empty in the event, so there is nobody to " \
        "mail; no mail sent" in message


def test_a_clean_unicode_name_and_tab_pass(host: Host, smtp_server: SMTPServer) -> None:
    host.receiver("user_registered")(host.User, event=make_event(
        "user_registered", {"email": "zoe@example.com", "name": "Zoë\tO'Brien"}))

    [message] = smtp_server.messages
    assert message["Subject"] == "Welcome, Zoë\tO'Brien!"
