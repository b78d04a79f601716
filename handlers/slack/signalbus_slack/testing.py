"""pytest plugin of signalbus-slack (``pytest11`` entry point): the ``slack_webhook`` fixture.

``slack_webhook`` is a real HTTP server (pytest-httpserver) on 127.0.0.1 and a free
port (started once per session, with fresh records for every test), answering like a
Slack incoming webhook (``200 ok``). Point an app at it with
``slack_webhook.configure(app)`` (or merge ``slack_webhook.config`` into the config
given to ``init_app``/``attach``); then:

* ``slack_webhook.posts``: the JSON bodies posted, in order;
* ``slack_webhook.requests``: every request as a :class:`Post` (path, headers, json,
  the status answered);
* ``slack_webhook.respond(status, body, headers=..., times=1)``: answer the next
  posts differently (``429`` with ``{"Retry-After": "30"}``, ``500``, ``404 no_service``);
* ``slack_webhook.url_for(name)``: another webhook URL on the same server, for
  per-rule ``webhook_url``s.

This module imports nothing heavy: pytest-httpserver is imported when the fixture starts.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import threading
from collections.abc import Generator, Mapping
from typing import Any

import pytest

__all__ = ["Post", "SlackWebhook"]


@dataclasses.dataclass(frozen=True)
class Post:
    """One request the webhook server received."""

    path: str
    headers: dict[str, str]
    json: Any
    status: int


@dataclasses.dataclass(frozen=True)
class _Reply:
    status: int
    body: str
    headers: Mapping[str, str]


class SlackWebhook:
    """A local stand-in for a Slack incoming webhook; see the module docstring."""

    host = "127.0.0.1"
    path = "/services/T0SIGNALB/B0SIGNALB/s3cr3tT0kenXXXXXXXXXXXX"
    """The path of :attr:`url`: shaped like Slack's, with a token that must stay secret."""

    def __init__(self) -> None:
        self.requests: list[Post] = []
        self._replies: collections.deque[_Reply] = collections.deque()
        self._lock = threading.Lock()
        self.server: Any = None
        """The running ``pytest_httpserver.HTTPServer``."""

    @property
    def url(self) -> str:
        """The webhook URL (``http://127.0.0.1:<port>/services/...``)."""
        return self.url_for()

    def url_for(self, name: str | None = None) -> str:
        """The default webhook URL, or another one on this server for ``name``."""
        path = self.path if name is None else f"/services/T0SIGNALB/{name}/s3cr3t-{name}"
        return str(self.server.url_for(path))

    @property
    def posts(self) -> list[Any]:
        """The JSON bodies of every post received, in order."""
        with self._lock:
            return [p.json for p in self.requests]

    @property
    def config(self) -> dict[str, Any]:
        """signalbus-slack settings that post here (``SIGNALBUS_SLACK_WEBHOOK_URL``)."""
        return {"SIGNALBUS_SLACK_WEBHOOK_URL": self.url}

    def configure(self, app: Any) -> Any:
        """Put :attr:`config` into ``app.config``; returns ``app``."""
        app.config.update(self.config)
        return app

    def respond(self, status: int, body: str = "", *, headers: Mapping[str, str] | None = None,
                times: int = 1) -> None:
        """Answer the next ``times`` posts with ``status``/``body``/``headers``."""
        with self._lock:
            for _ in range(times):
                self._replies.append(_Reply(status, body, dict(headers or {})))

    def clear(self) -> None:
        """Forget the requests received so far and any queued replies."""
        with self._lock:
            self.requests.clear()
            self._replies.clear()

    def _handle(self, request: Any) -> Any:
        from werkzeug import Response

        with self._lock:
            reply = self._replies.popleft() if self._replies else _Reply(200, "ok", {})
            try:
                payload = json.loads(request.get_data(as_text=True))
            except ValueError:
                payload = None
            self.requests.append(Post(request.path, dict(request.headers.items()), payload,
                                      reply.status))
        return Response(reply.body, status=reply.status, headers=dict(reply.headers),
                        content_type="text/plain; charset=utf-8")

    def attach(self, server: Any) -> None:
        """Answer the webhook paths of a running ``pytest_httpserver.HTTPServer``."""
        self.server = server
        server.expect_request(re.compile(r"^/services/"), method="POST") \
            .respond_with_handler(self._handle)

    def __repr__(self) -> str:
        # the URL is secret-shaped: show the redacted form, as the plugin does
        port = self.server.port if self.server is not None else "?"
        return f"<SlackWebhook http://{self.host}:{port}/*** posts={len(self.requests)}>"


def _start_server() -> Any:
    try:
        from pytest_httpserver import HTTPServer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the slack_webhook fixture needs pytest-httpserver: pip install 'signalbus-slack[test]'"
        ) from exc
    server = HTTPServer(host=SlackWebhook.host, port=0)
    server.start()
    return server


@pytest.fixture(scope="session")
def _signalbus_slack_server() -> Generator[Any, None, None]:
    # One server per session, as pytest-httpserver does: stopping one takes half a second.
    server = _start_server()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


@pytest.fixture
def slack_webhook(_signalbus_slack_server: Any) -> Generator[SlackWebhook, None, None]:
    """A local Slack incoming-webhook server for this test (see :class:`SlackWebhook`).

    The server runs for the whole session; each test gets a fresh recorder on it.
    """
    _signalbus_slack_server.clear()
    webhook = SlackWebhook()
    webhook.attach(_signalbus_slack_server)
    try:
        yield webhook
    finally:
        _signalbus_slack_server.clear()
