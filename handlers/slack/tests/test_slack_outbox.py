"""Through the outbox and the real worker: a 429's Retry-After decides the next attempt."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from signalbus_slack.testing import SlackWebhook
from sqlalchemy import select

from signalbus.outbox import deliveries

from .conftest import Host


@pytest.mark.signalbus_receiver_errors("log")
def test_a_rate_limited_post_is_retried_after_retry_after(
        make_host: Callable[..., Host], slack_webhook: SlackWebhook,
        signalbus_drain: Callable[..., Any]) -> None:
    host = make_host(SIGNALBUS_DELIVERY="outbox")
    slack_webhook.respond(429, "rate_limited", headers={"Retry-After": "1"})
    host.register("ada@example.com")
    assert slack_webhook.requests == []  # nothing is posted in the committing process

    # backoff 0 would retry at once: only Retry-After holds the second attempt back
    first = signalbus_drain(host.app, backoff_base=0)
    assert (first.retried, first.delivered) == (1, 0)
    assert len(slack_webhook.requests) == 1
    time.sleep(1.05)
    second = signalbus_drain(host.app, backoff_base=0)

    assert (second.retried, second.delivered) == (0, 1)
    assert [r.status for r in slack_webhook.requests] == [429, 200]


@pytest.mark.signalbus_receiver_errors("log")
def test_a_404_is_dead_at_once(make_host: Callable[..., Host], slack_webhook: SlackWebhook,
                               signalbus_drain: Callable[..., Any]) -> None:
    host = make_host(SIGNALBUS_DELIVERY="outbox")
    slack_webhook.respond(404, "no_service")
    host.register("ada@example.com")

    stats = signalbus_drain(host.app, backoff_base=0)

    assert (stats.dead, stats.retried, stats.delivered) == (1, 0, 0)
    assert len(slack_webhook.requests) == 1
    with host.app.app_context():
        [(state, error)] = host.db.session.execute(
            select(deliveries.c.state, deliveries.c.last_error)).all()
    # the error the outbox keeps for operators names the webhook only redacted
    assert state == "dead"
    assert f"webhook http://127.0.0.1:{slack_webhook.server.port}/" in error
    assert "Slack refused the post: 404 no_service" in error
    assert "s3cr3t" not in error and "/services/" not in error
