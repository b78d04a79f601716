"""The webhook URL is a secret: never in logs, exception text or `flask signalbus list`."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Callable

import pytest
from signalbus_slack import redact_url
from signalbus_slack.testing import SlackWebhook

from signalbus import Permanent, Retry
from signalbus.cli import cli

from .conftest import Host, make_event

SECRET = "s3cr3tT0ken"


def _our_log(caplog: pytest.LogCaptureFixture) -> str:
    # werkzeug's records are the fake Slack server's own access log (Slack's side of
    # the wire in production), not something signalbus-slack logs
    return "\n".join(caplog.handler.format(r) for r in caplog.records if r.name != "werkzeug")


def test_redact_url_keeps_only_scheme_host_and_port() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/XYZ?x=1") == \
        "https://hooks.slack.com/***"
    assert redact_url("http://user:pw@127.0.0.1:8080/services/T0/B0/XYZ") == \
        "http://127.0.0.1:8080/***"
    assert redact_url("http://[::1]:81/a") == "http://[::1]:81/***"


@pytest.mark.signalbus_receiver_errors("log")
def test_nothing_logged_carries_the_url(host: Host, slack_webhook: SlackWebhook,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    slack_webhook.respond(500, "internal_error")

    host.register("ok@example.com")     # fails with 500: the bus logs the traceback
    host.register("ok2@example.com")    # succeeds: slack_sdk's debug logs of the request

    text = _our_log(caplog)
    assert "Sending a request - url: http://127.0.0.1" in text  # slack_sdk did log it...
    assert f"http://127.0.0.1:{slack_webhook.server.port}/***" in text  # ...redacted
    assert "receiver signalbus_slack:user_registered failed" in text
    assert SECRET not in text
    assert "/services/" not in text


@pytest.mark.signalbus_receiver_errors("log")
def test_connection_errors_do_not_leak_the_url(make_host: Callable[..., Host],
                                               caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = make_host(SIGNALBUS_SLACK_WEBHOOK_URL=f"http://127.0.0.1:{port}/services/T/B/{SECRET}")
    caplog.set_level(logging.DEBUG)

    with pytest.raises(Retry) as info:
        host.receiver("user_registered")(None, event=make_event("user_registered", {}))
    host.register("ada@example.com")

    shown = "".join(traceback.format_exception(info.value))
    assert f"webhook http://127.0.0.1:{port}/***" in shown
    assert SECRET not in shown and "/services/" not in shown
    assert "Failed to send a request to Slack API server" in _our_log(caplog)
    assert SECRET not in _our_log(caplog)


@pytest.mark.parametrize("status", [404, 429, 500])
def test_exception_text_carries_the_redacted_url(host: Host, slack_webhook: SlackWebhook,
                                                 status: int) -> None:
    slack_webhook.respond(status, "nope", headers={"Retry-After": "1"})

    with pytest.raises((Retry, Permanent)) as info:
        host.receiver("user_registered")(None, event=make_event("user_registered", {}))

    shown = "".join(traceback.format_exception(info.value))
    assert f"webhook http://127.0.0.1:{slack_webhook.server.port}/***" in shown
    assert SECRET not in shown and "/services/" not in shown
    assert SECRET not in repr(host.receiver("user_registered"))


def test_flask_signalbus_list_shows_the_url_redacted(host: Host,
                                                     slack_webhook: SlackWebhook) -> None:
    runner = host.app.test_cli_runner()

    plain = runner.invoke(cli, ["list"])
    as_json = runner.invoke(cli, ["list", "--json"])

    assert plain.exit_code == 0 and as_json.exit_code == 0, plain.output + as_json.output
    redacted = f"http://127.0.0.1:{slack_webhook.server.port}/***"
    assert f"rule 'user_registered': user_registered -> {redacted}" in plain.output
    assert "    receiver   signalbus_slack:user_registered  (plugin slack)" in plain.output
    assert redacted in as_json.output
    for output in (plain.output, as_json.output):
        assert SECRET not in output and "/services/" not in output


def test_a_malformed_url_is_refused_without_showing_it(make_host: Callable[..., Host]) -> None:
    from signalbus import PluginError

    with pytest.raises(PluginError) as info:
        make_host(SIGNALBUS_PLUGINS_STRICT=True,
                  SIGNALBUS_SLACK_WEBHOOK_URL=f"hooks.slack.com/services/{SECRET}")

    assert "SIGNALBUS_SLACK_WEBHOOK_URL is not an http(s) URL with a host (value not shown: " \
        "it is a secret)" in str(info.value)
    assert SECRET not in str(info.value)
