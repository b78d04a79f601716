"""Proxy environment variables never hijack a loopback webhook; elsewhere they apply."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from signalbus_slack import proxies_for
from signalbus_slack.testing import SlackWebhook

from .conftest import Host, make_event

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY",
              "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def dead_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every proxy variable pointing at an address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, url)
    yield url


@pytest.mark.parametrize("hostname", ["127.0.0.1", "localhost"])
def test_a_loopback_webhook_is_reached_directly(make_host: Callable[..., Host],
                                                slack_webhook: SlackWebhook, dead_proxy: str,
                                                hostname: str) -> None:
    url = slack_webhook.url.replace("127.0.0.1", hostname)
    host = make_host(SIGNALBUS_SLACK_WEBHOOK_URL=url)

    host.register("ada@example.com")
    host.receiver("user_registered")(None, event=make_event("user_registered", {"name": "Bo"}))

    assert [p["text"] for p in slack_webhook.posts] == [
        "New user registered: Ada", "New user registered: Bo"]


def test_other_hosts_go_through_the_environment_proxy(make_host: Callable[..., Host],
                                                      slack_webhook: SlackWebhook,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the fake Slack server plays the proxy: it gets the absolute-URI request
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    proxy = f"http://127.0.0.1:{slack_webhook.server.port}"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    host = make_host(SIGNALBUS_SLACK_WEBHOOK_URL="http://hooks.example.invalid/services/T/B/x")

    host.receiver("user_registered")(None, event=make_event("user_registered", {"name": "Cy"}))

    [post] = slack_webhook.requests
    assert post.path == "/services/T/B/x"
    assert post.headers["Host"] == "hooks.example.invalid"
    assert post.json["text"] == "New user registered: Cy"


def test_proxies_for(dead_proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    slack = "https://hooks.slack.com/services/T/B/x"
    assert proxies_for("http://127.0.0.1:9/x", None) == {}
    assert proxies_for("http://[::1]:9/x", "http://explicit:3128") == {}
    assert proxies_for("http://api.localhost/x", None) == {}
    assert proxies_for(slack, None) == {"http": dead_proxy, "https": dead_proxy}
    assert proxies_for(slack, "http://explicit:3128") == {
        "http": "http://explicit:3128", "https": "http://explicit:3128"}
    monkeypatch.setenv("NO_PROXY", "slack.com")
    monkeypatch.setenv("no_proxy", "slack.com")
    assert proxies_for(slack, None) == {}
