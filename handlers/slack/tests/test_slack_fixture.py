"""The slack_webhook fixture: a real local HTTP server recording posts."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from flask import Flask
from signalbus_slack.testing import SlackWebhook


def _post(url: str, payload: object) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_it_answers_like_slack_and_records_posts(slack_webhook: SlackWebhook) -> None:
    assert slack_webhook.url.startswith("http://127.0.0.1:")
    assert _post(slack_webhook.url, {"text": "hi"}) == (200, "ok")
    assert slack_webhook.posts == [{"text": "hi"}]
    assert slack_webhook.requests[0].status == 200


def test_queued_replies_are_used_in_order(slack_webhook: SlackWebhook) -> None:
    slack_webhook.respond(429, "rate_limited", headers={"Retry-After": "3"}, times=2)
    slack_webhook.respond(404, "no_service")

    answers = [_post(slack_webhook.url_for("other"), {"n": n})[0] for n in range(4)]

    assert answers == [429, 429, 404, 200]
    assert [r.path for r in slack_webhook.requests][-1] == "/services/T0SIGNALB/other/s3cr3t-other"
    slack_webhook.clear()
    assert slack_webhook.posts == []


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_starts_with_no_posts(slack_webhook: SlackWebhook, run: int) -> None:
    assert slack_webhook.posts == []
    _post(slack_webhook.url, {"run": run})


def test_configure_and_repr_do_not_show_the_secret(slack_webhook: SlackWebhook) -> None:
    app = slack_webhook.configure(Flask("fixture_app"))

    assert app.config["SIGNALBUS_SLACK_WEBHOOK_URL"] == slack_webhook.url
    assert "s3cr3t" not in repr(slack_webhook)
