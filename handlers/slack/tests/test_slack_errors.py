"""Webhook answers: 429 → Retry(after=Retry-After); 5xx, network → Retry; other 4xx → Permanent."""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from signalbus_slack import parse_retry_after
from signalbus_slack.testing import SlackWebhook

from signalbus import Permanent, Retry

from .conftest import Host, make_event


def _post(host: Host) -> None:
    host.receiver("user_registered")(host.User, event=make_event(
        "user_registered", {"email": "ada@example.com", "name": "Ada"}))


def test_429_with_retry_after_seconds(host: Host, slack_webhook: SlackWebhook) -> None:
    slack_webhook.respond(429, "rate_limited", headers={"Retry-After": "30"})

    started = time.monotonic()
    with pytest.raises(Retry) as info:
        _post(host)

    assert info.value.after == 30.0
    assert time.monotonic() - started < 5  # no sleeping in the receiver
    assert "rate limited (429 rate_limited); retry after 30s" in str(info.value)
    assert len(slack_webhook.requests) == 1  # and no retrying inside it either


def test_429_with_retry_after_as_an_http_date(host: Host, slack_webhook: SlackWebhook) -> None:
    when = email.utils.format_datetime(
        dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=120), usegmt=True)
    slack_webhook.respond(429, "rate_limited", headers={"Retry-After": when})

    with pytest.raises(Retry) as info:
        _post(host)

    assert info.value.after is not None and 110 <= info.value.after <= 120


def test_429_without_retry_after_leaves_the_delay_to_the_backoff(
        host: Host, slack_webhook: SlackWebhook) -> None:
    slack_webhook.respond(429, "rate_limited")

    with pytest.raises(Retry) as info:
        _post(host)

    assert info.value.after is None
    assert "retry after the backoff delay" in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_raises_retry(host: Host, slack_webhook: SlackWebhook, status: int) -> None:
    slack_webhook.respond(status, "internal_error")

    with pytest.raises(Retry) as info:
        _post(host)

    assert info.value.after is None
    assert f"Slack answered {status} internal_error; will retry" in str(info.value)


def test_503_with_retry_after_passes_it_on(host: Host, slack_webhook: SlackWebhook) -> None:
    slack_webhook.respond(503, "", headers={"Retry-After": "5"})

    with pytest.raises(Retry) as info:
        _post(host)

    assert info.value.after == 5.0


@pytest.mark.parametrize(("status", "body"), [
    (404, "no_service"), (400, "invalid_payload"), (403, "action_prohibited"),
    (410, "channel_is_archived"),
])
def test_other_4xx_raise_permanent(host: Host, slack_webhook: SlackWebhook, status: int,
                                   body: str) -> None:
    slack_webhook.respond(status, body)

    with pytest.raises(Permanent) as info:
        _post(host)

    assert str(info.value).endswith(f"Slack refused the post: {status} {body}")


def test_a_webhook_nobody_listens_on_raises_retry(make_host: Callable[..., Host]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = make_host(SIGNALBUS_SLACK_WEBHOOK_URL=f"http://127.0.0.1:{port}/services/T/B/sekrit")

    with pytest.raises(Retry) as info:
        _post(host)

    assert "could not post (timeout 10s): ConnectionRefusedError" in str(info.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        yield sock.getsockname()[1]


def test_a_silent_webhook_times_out_with_retry(make_host: Callable[..., Host],
                                               silent_port: int) -> None:
    host = make_host(SIGNALBUS_SLACK_TIMEOUT=0.3,
                     SIGNALBUS_SLACK_WEBHOOK_URL=f"http://127.0.0.1:{silent_port}/services/x")

    started = time.monotonic()
    with pytest.raises(Retry) as info:
        _post(host)

    assert time.monotonic() - started < 5
    assert "could not post (timeout 0.3s): TimeoutError" in str(info.value)


@pytest.mark.signalbus_receiver_errors("log")
def test_inline_delivery_logs_the_retry_and_the_commit_stands(
        host: Host, slack_webhook: SlackWebhook, caplog: pytest.LogCaptureFixture) -> None:
    slack_webhook.respond(500, "oops")

    with caplog.at_level(logging.ERROR, logger="signalbus"):
        user_id = host.register("ada@example.com")

    with host.app.app_context():
        assert host.db.session.get(host.User, user_id) is not None
    [record] = [r for r in caplog.records if r.name == "signalbus"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], Retry)


@pytest.mark.parametrize(("value", "expected"), [
    ("0", 0.0), ("12", 12.0), (" 1.5 ", 1.5), ("-3", 0.0), (None, None), ("soon", None),
    ("nan", None),
    ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
    ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = dt.datetime(2015, 10, 21, 7, 28, 0, tzinfo=dt.UTC)
    assert parse_retry_after(value, now=now) == expected
