"""Packaged templates, overridden by the host app's templates/signalbus_mail/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from signalbus_mail.testing import SMTPServer

from signalbus import PluginError

from .conftest import Host


def _write(root: Path, name: str, text: str) -> None:
    folder = root / "templates" / "signalbus_mail"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def test_the_host_app_overrides_a_packaged_template(make_host: Callable[..., Host],
                                                    app_root: Path,
                                                    smtp_server: SMTPServer) -> None:
    _write(app_root, "welcome.subject.txt", "Hi {{ data.name }}, from {{ config.BRAND }}")
    host = make_host(BRAND="Badgeyay")

    host.register("ada@example.com", name="Ada")

    [message] = smtp_server.messages
    assert message["Subject"] == "Hi Ada, from Badgeyay"
    # the templates the host did not override still come from the package
    assert "your account for ada@example.com is ready" in \
        message.get_body(("plain",)).get_content()


def test_a_rule_without_an_html_template_sends_plain_text(make_host: Callable[..., Host],
                                                          app_root: Path,
                                                          smtp_server: SMTPServer) -> None:
    _write(app_root, "note.subject.txt", "Note")
    _write(app_root, "note.txt", "Plain {{ data.email }} ({{ rule }}, {{ event.op }})")
    host = make_host(SIGNALBUS_MAIL_RULES={"user_registered": {"to": "email",
                                                               "template": "note"}})

    host.register("ada@example.com")

    [message] = smtp_server.messages
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "Plain ada@example.com (user_registered, insert)"


def test_html_templates_escape_data(host: Host, smtp_server: SMTPServer) -> None:
    host.register("ada@example.com", name="<b>Ada</b>")

    [message] = smtp_server.messages
    assert "Hello &lt;b&gt;Ada&lt;/b&gt;," in message.get_body(("html",)).get_content()
    assert "Hello <b>Ada</b>," in message.get_body(("plain",)).get_content()


def test_a_missing_template_fails_at_startup(make_host: Callable[..., Host]) -> None:
    with pytest.raises(PluginError) as info:
        make_host(SIGNALBUS_PLUGINS_STRICT=True, SIGNALBUS_MAIL_RULES={
            "user_registered": {"to": "email", "template": "nowhere"}})

    assert "SIGNALBUS_MAIL_RULES['user_registered'] uses template 'nowhere', but " \
        "'signalbus_mail/nowhere.subject.txt' was found neither in the app's templates " \
        "folder nor in signalbus-mail" in str(info.value)


def test_a_template_that_does_not_compile_fails_at_startup(make_host: Callable[..., Host],
                                                           app_root: Path) -> None:
    _write(app_root, "welcome.txt", "Hello {% if %}")

    with pytest.raises(PluginError) as info:
        make_host(SIGNALBUS_PLUGINS_STRICT=True)

    assert "template 'signalbus_mail/welcome.txt' of SIGNALBUS_MAIL_RULES['user_registered'] " \
        "does not compile" in str(info.value)
