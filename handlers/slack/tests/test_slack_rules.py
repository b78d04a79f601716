"""Rules and defaults: SIGNALBUS_SLACK_RULES, webhook URLs, plain SQLAlchemy buses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from signalbus_slack import DEFAULT_RULES
from signalbus_slack.testing import SlackWebhook
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import signalbus
import signalbus.sqlite
from signalbus import ConfigurationError, PluginError

from .conftest import Host, make_event


def test_the_default_rules_and_settings(host: Host, slack_webhook: SlackWebhook) -> None:
    config = host.app.config
    assert config["SIGNALBUS_SLACK_RULES"] is DEFAULT_RULES
    assert set(DEFAULT_RULES) == {"user_registered", "issue_raised"}
    assert config["SIGNALBUS_SLACK_TIMEOUT"] == 10.0
    assert config["SIGNALBUS_SLACK_PROXY"] is None
    runtime = host.bus.runtime(host.app)
    assert [r.name for r in runtime.receivers_for("user_registered", host.User)] == [
        "signalbus_slack:user_registered"]
    assert [r.name for r in runtime.receivers_for("issue_raised", None)] == [
        "signalbus_slack:issue_raised"]


def test_the_default_rules_cannot_be_changed_in_place() -> None:
    with pytest.raises(TypeError):
        DEFAULT_RULES["x"] = {"text": "y"}  # type: ignore[index]


def test_the_default_texts_fall_back_when_fields_are_missing(host: Host,
                                                             slack_webhook: SlackWebhook
                                                             ) -> None:
    host.receiver("user_registered")(None, event=make_event("user_registered", {}, pk=9))
    host.receiver("issue_raised")(None, event=make_event("issue_raised", {}, pk=3))

    assert [p["text"] for p in slack_webhook.posts] == [
        "New user registered: 9", ":rotating_light: Issue raised: #3"]


def test_without_a_webhook_url_the_defaults_stay_inactive(make_host: Callable[..., Host],
                                                          slack_webhook: SlackWebhook) -> None:
    host = make_host(SIGNALBUS_SLACK_WEBHOOK_URL=None)

    host.register("ada@example.com")

    assert slack_webhook.posts == []
    [plugin] = host.bus.runtime(host.app).plugins
    assert plugin.status == "loaded"
    assert plugin.details == [
        "default rule 'user_registered' skipped: no webhook URL: set "
        "SIGNALBUS_SLACK_WEBHOOK_URL (or the rule's webhook_url)",
        "default rule 'issue_raised' skipped: no webhook URL: set "
        "SIGNALBUS_SLACK_WEBHOOK_URL (or the rule's webhook_url)",
    ]


@pytest.mark.parametrize(("settings", "error"), [
    ({"SIGNALBUS_SLACK_WEBHOOK_URL": None,
      "SIGNALBUS_SLACK_RULES": {"signups": {"signal": "user_registered", "text": "x"}}},
     "SIGNALBUS_SLACK_RULES['signups'] cannot post: no webhook URL"),
    ({"SIGNALBUS_SLACK_RULES": {"x": {"text": "{% if %}"}}},
     "SIGNALBUS_SLACK_RULES['x']['text'] does not compile"),
    ({"SIGNALBUS_SLACK_RULES": {"x": {"text": "a", "channel": "#general"}}},
     "SIGNALBUS_SLACK_RULES['x'] has unknown key(s) 'channel'"),
    ({"SIGNALBUS_SLACK_RULES": {"x": {"section": "a"}}},
     "SIGNALBUS_SLACK_RULES['x'] needs 'text'."),
    ({"SIGNALBUS_SLACK_TIMEOUT": 0}, "SIGNALBUS_SLACK_TIMEOUT is 0; it must be a positive number"),
    ({"SIGNALBUS_SLACK_RULES": {"x": {"text": "a", "webhook_url": "ftp://h/x"}}},
     "SIGNALBUS_SLACK_RULES['x']['webhook_url'] is not an http(s) URL with a host"),
])
def test_bad_settings_are_configuration_errors(make_host: Callable[..., Host],
                                               settings: dict[str, object], error: str) -> None:
    with pytest.raises(PluginError) as info:
        make_host(SIGNALBUS_PLUGINS_STRICT=True, **settings)

    assert error in str(info.value)
    assert isinstance(info.value.__cause__, ConfigurationError)


def test_it_works_on_a_plain_sqlalchemy_bus(slack_webhook: SlackWebhook) -> None:
    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = "accounts"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))

    engine = signalbus.sqlite.configure(create_engine("sqlite://"))
    Base.metadata.create_all(engine)
    signalbus.bind(Account, "insert", "user_registered")
    factory = sessionmaker(engine)
    bus = signalbus.SignalBus()
    runtime = bus.attach(factory, config={"SIGNALBUS_PLUGINS": ["slack"], **slack_webhook.config})

    with factory() as session:
        session.add(Account(name="Dee"))
        session.commit()

    assert [p["text"] for p in slack_webhook.posts] == ["New user registered: Dee"]
    assert runtime.config["SIGNALBUS_SLACK_TIMEOUT"] == 10.0
    engine.dispose()
