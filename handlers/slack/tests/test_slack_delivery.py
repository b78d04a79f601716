"""End to end: committed changes are posted to the webhook (a real local HTTP server)."""

from __future__ import annotations

from collections.abc import Callable

from signalbus_slack.testing import SlackWebhook

from signalbus.testing import SignalCapture

from .conftest import Host, make_event


def test_a_registration_is_posted_with_text_and_a_section_block(
        host: Host, slack_webhook: SlackWebhook, signalbus_capture: SignalCapture) -> None:
    host.register("ada@example.com", name="Ada", plan="pro")

    signalbus_capture.assert_sent("user_registered", email="ada@example.com")
    [post] = slack_webhook.requests
    assert post.path == SlackWebhook.path
    assert post.headers["Content-Type"] == "application/json;charset=utf-8"
    assert post.json == {
        "text": "New user registered: Ada (plan: pro)",
        "blocks": [{"type": "section",
                    "text": {"type": "mrkdwn", "text": "New user registered: Ada (plan: pro)"}}],
    }


def test_issue_raised_is_posted(host: Host, slack_webhook: SlackWebhook) -> None:
    with host.app.app_context():
        host.bus.emit("issue_raised", {"title": "Printer on fire"})

    assert [p["text"] for p in slack_webhook.posts] == [
        ":rotating_light: Issue raised: Printer on fire"]


def test_data_is_escaped_but_the_template_is_not(make_host: Callable[..., Host],
                                                 slack_webhook: SlackWebhook) -> None:
    host = make_host(SIGNALBUS_SLACK_RULES={"user_registered": {
        "text": "<!here> new user {{ data.name }}",
        "section": "*{{ data.email }}* & {{ data.missing }}!"}})

    host.register("a&b@example.com", name="<!channel> <https://evil.example|click>")

    [post] = slack_webhook.posts
    assert post["text"] == "<!here> new user &lt;!channel&gt; &lt;https://evil.example|click&gt;"
    assert post["blocks"][0]["text"]["text"] == "*a&amp;b@example.com* & !"


def test_per_rule_webhook_urls_and_rules_without_blocks(make_host: Callable[..., Host],
                                                        slack_webhook: SlackWebhook) -> None:
    host = make_host(SIGNALBUS_SLACK_WEBHOOK_URL=None, SIGNALBUS_SLACK_RULES={
        "signups": {"signal": "user_registered", "text": "signup {{ data.email }}",
                    "section": False, "webhook_url": slack_webhook.url_for("signups")},
        "alerts": {"signal": "issue_raised", "text": "issue {{ event.pk }}",
                   "webhook_url": slack_webhook.url_for("alerts")},
    })

    host.register("ada@example.com")
    host.receiver("alerts", "issue_raised")(None, event=make_event("issue_raised", {}, pk=42))

    first, second = slack_webhook.requests
    assert first.path == "/services/T0SIGNALB/signups/s3cr3t-signups"
    assert first.json == {"text": "signup ada@example.com"}
    assert second.path == "/services/T0SIGNALB/alerts/s3cr3t-alerts"
    assert second.json["text"] == "issue 42"


def test_a_long_section_is_cut_to_slacks_limit(make_host: Callable[..., Host],
                                               slack_webhook: SlackWebhook) -> None:
    host = make_host(SIGNALBUS_SLACK_RULES={"user_registered": {"text": "{{ data.name }}"}})

    host.register("ada@example.com", name="x" * 5000)

    [post] = slack_webhook.posts
    assert len(post["text"]) == 5000
    section = post["blocks"][0]["text"]["text"]
    assert len(section) == 3000 and section.endswith("…")
