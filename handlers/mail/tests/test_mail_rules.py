"""Rules and defaults: SIGNALBUS_MAIL_RULES, recipients, requirements, inactive setups."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask_mail import Mail, email_dispatched
from signalbus_mail import DEFAULT_RULES
from signalbus_mail.testing import SMTPServer
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

import signalbus
import signalbus.sqlite
from signalbus import ConfigurationError, PluginError
from signalbus.cli import cli

from .conftest import ADMINS, Host, make_event


def test_the_two_default_rules(host: Host) -> None:
    assert host.app.config["SIGNALBUS_MAIL_RULES"] == {
        "user_registered": {"to": "email", "template": "welcome"},
        "issue_raised": {"to": "@admins", "template": "issue_raised"},
    }
    assert host.app.config["SIGNALBUS_MAIL_RULES"] is not DEFAULT_RULES
    assert host.app.config["SIGNALBUS_MAIL_ADMINS"] == ADMINS
    runtime = host.bus.runtime(host.app)
    assert [r.name for r in runtime.receivers_for("user_registered", host.User)] == [
        "signalbus_mail:user_registered"]
    assert [r.name for r in runtime.receivers_for("issue_raised", None)] == [
        "signalbus_mail:issue_raised"]
    [plugin] = runtime.plugins
    assert plugin.requires == {"user_registered": frozenset({"email"})}


def test_flask_signalbus_list_shows_the_rules(host: Host) -> None:
    result = host.app.test_cli_runner().invoke(cli, ["list"])

    assert result.exit_code == 0, result.output
    assert "    receiver   signalbus_mail:user_registered  (plugin mail)" in result.output
    assert "rule 'user_registered': user_registered -> data field 'email', template " \
        "'welcome'" in result.output
    assert "rule 'issue_raised': issue_raised -> @admins (2 address(es)), template " \
        "'issue_raised'" in result.output
    assert f"SMTP 127.0.0.1:{host.app.config['MAIL_PORT']}, timeout 10s" in result.output


def test_a_binding_without_the_email_field_fails_init_app(
        make_host: Callable[..., Host]) -> None:
    with pytest.raises(PluginError) as info:
        make_host(bind_fields=["id", "name"])

    assert "plugin 'mail' needs field(s) 'email' of signal 'user_registered'" in str(info.value)


def test_the_default_admin_rule_is_skipped_without_admins(make_host: Callable[..., Host],
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    with caplog.at_level(logging.INFO, logger="signalbus_mail"):
        host = make_host(SIGNALBUS_MAIL_ADMINS=[])

    runtime = host.bus.runtime(host.app)
    assert runtime.receivers_for("issue_raised", None) == []
    assert "default rule 'issue_raised' skipped: SIGNALBUS_MAIL_ADMINS is empty (@admins)" \
        in runtime.plugins[0].details
    assert "default rule 'issue_raised' skipped" in caplog.text


def test_an_explicit_admin_rule_without_admins_is_an_error(
        make_host: Callable[..., Host]) -> None:
    with pytest.raises(PluginError) as info:
        make_host(SIGNALBUS_PLUGINS_STRICT=True, SIGNALBUS_MAIL_ADMINS=[],
                  SIGNALBUS_MAIL_RULES={"alert": {"signal": "issue_raised", "to": "@admins",
                                                  "template": "issue_raised"}})

    assert "SIGNALBUS_MAIL_RULES['alert'] cannot send: SIGNALBUS_MAIL_ADMINS is empty " \
        "(@admins)." in str(info.value)


def test_without_a_sender_the_defaults_stay_inactive(make_host: Callable[..., Host],
                                                     smtp_server: SMTPServer) -> None:
    host = make_host(MAIL_DEFAULT_SENDER=None)

    host.register("ada@example.com")

    assert smtp_server.messages == []
    details = host.bus.runtime(host.app).plugins[0].details
    assert "default rule 'user_registered' skipped: no sender: set MAIL_DEFAULT_SENDER (or " \
        "the rule's 'sender')" in details


def test_literal_recipients_a_rule_name_and_several_rules_per_signal(
        make_host: Callable[..., Host], smtp_server: SMTPServer) -> None:
    host = make_host(SIGNALBUS_MAIL_RULES={
        "user_registered": {"to": "email", "name": "name", "template": "welcome"},
        "sales_copy": {"signal": "user_registered", "to": ["sales@example.com"],
                       "bcc": "@admins", "sender": ["Sales bot", "sales-bot@example.com"],
                       "template": "welcome"},
    })

    host.register("ada@example.com", name="Ada Lovelace")

    welcome, copy = smtp_server.envelopes
    assert welcome.message["To"] == "Ada Lovelace <ada@example.com>"
    assert copy.mail_from == "sales-bot@example.com"
    assert copy.message["From"] == "Sales bot <sales-bot@example.com>"
    assert copy.message["To"] == "sales@example.com"
    assert copy.message["Bcc"] is None
    assert sorted(copy.rcpt_tos) == ["lead@example.com", "ops@example.com", "sales@example.com"]
    assert welcome.message["Message-ID"] != copy.message["Message-ID"]


def test_a_field_holding_a_list_of_addresses(make_host: Callable[..., Host],
                                             smtp_server: SMTPServer) -> None:
    host = make_host(SIGNALBUS_MAIL_RULES={"team_created": {"to": "members",
                                                            "template": "issue_raised"}})
    signalbus.signal("team_created")

    with host.app.app_context():
        host.bus.emit("team_created", {"members": ["a@example.com", "b@example.com"]})

    [envelope] = smtp_server.envelopes
    assert sorted(envelope.rcpt_tos) == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(("rules", "error"), [
    ({"x": {"to": "@everyone", "template": "welcome"}},
     "SIGNALBUS_MAIL_RULES['x']['to'] is '@everyone', an unknown recipient group; the "
     "groups are '@admins'."),
    ({"x": {"template": "welcome"}}, "SIGNALBUS_MAIL_RULES['x'] needs 'to'."),
    ({"x": {"to": "email", "template": "welcome", "subject": "Hi"}},
     "SIGNALBUS_MAIL_RULES['x'] has unknown key(s) 'subject'"),
    (["welcome"], "SIGNALBUS_MAIL_RULES must be a mapping of rule name to rule, not list."),
])
def test_bad_rules_are_configuration_errors(make_host: Callable[..., Host], rules: object,
                                            error: str) -> None:
    with pytest.raises(PluginError) as info:
        make_host(SIGNALBUS_PLUGINS_STRICT=True, SIGNALBUS_MAIL_RULES=rules)

    assert error in str(info.value)
    assert isinstance(info.value.__cause__, ConfigurationError)


def test_a_plain_sqlalchemy_bus_leaves_the_plugin_inactive() -> None:
    bus = signalbus.SignalBus()
    engine = signalbus.sqlite.configure(create_engine("sqlite://"))
    runtime = bus.attach(sessionmaker(engine), config={"SIGNALBUS_PLUGINS": ["mail"]})

    [plugin] = runtime.plugins
    assert plugin.status == "loaded"
    assert plugin.details == ["inactive: signalbus-mail sends through Flask-Mail and needs a "
                              "Flask app (signalbus.init_app)"]
    engine.dispose()


def test_flask_mail_set_up_by_the_host_is_used(smtp_server: SMTPServer) -> None:
    app = Flask("mail_host_own_mail")
    app.config.update(SIGNALBUS_PLUGINS=["mail"], MAIL_DEFAULT_SENDER="app@example.com",
                      SIGNALBUS_MAIL_RULES={"hello": {"to": ["x@example.com"],
                                                      "template": "welcome"}})
    smtp_server.configure(app)
    Mail(app)
    signalbus.signal("hello")
    bus = signalbus.SignalBus()
    bus.init_app(app)

    with app.app_context():
        bus.emit("hello", {"email": "x@example.com"})

    [message] = smtp_server.messages
    assert message["From"] == "app@example.com"
    assert message["Message-ID"].endswith("@example.com>")
    rec = bus.runtime(app).find_receiver("hello", "signalbus_mail:hello")
    assert rec is not None
    rec.fn(None, event=make_event("hello", {}))
    assert len(smtp_server.messages) == 2


def test_mail_suppress_send_sends_nothing_but_flask_mail_records_it(
        make_host: Callable[..., Host], smtp_server: SMTPServer) -> None:
    host = make_host(MAIL_SUPPRESS_SEND=True)
    seen: list[Any] = []
    with email_dispatched.connected_to(lambda app, message: seen.append(message)):
        host.register("ada@example.com")

    assert smtp_server.messages == []
    assert [m.recipients for m in seen] == [[("", "ada@example.com")]]



def test_a_default_rule_for_an_undeclared_signal_is_skipped(smtp_server, monkeypatch):
    """A host that never sends a default rule's signal gets no receiver (nor warning) for it."""
    import uuid

    import signalbus_mail.plugin
    from flask import Flask

    from signalbus import SignalBus, signals

    name = f"never_sent_{uuid.uuid4().hex[:8]}"  # undeclared in this process
    rules = {"user_registered": {"to": "email", "template": "welcome"},
             name: {"to": "@admins", "template": "issue_raised"}}
    monkeypatch.setitem(signalbus_mail.plugin.CONFIG_DEFAULTS, "SIGNALBUS_MAIL_RULES", rules)
    signalbus.signal("user_registered")
    app = Flask(__name__)
    app.config.update(smtp_server.config, MAIL_DEFAULT_SENDER="a@example.com",
                      SIGNALBUS_PLUGINS=["mail"], SIGNALBUS_MAIL_ADMINS=["x@example.com"])
    bus = SignalBus()
    bus.init_app(app)
    assert not signals.is_declared(name)
    (record,) = bus.runtime(app).plugins
    assert f"default rule {name!r} skipped: signal {name!r} is not declared by the app" \
        in record.details
    assert name not in bus.runtime(app).receivers()
    assert [r.name for r in bus.runtime(app).receivers()["user_registered"]] == [
        "signalbus_mail:user_registered"]
