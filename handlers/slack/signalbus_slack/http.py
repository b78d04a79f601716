"""The HTTP side: slack_sdk's ``WebhookClient`` with a safe proxy choice and no secrets in logs.

Two things slack_sdk does not do the way a background receiver needs:

* **Proxies.** ``WebhookClient`` takes ``HTTPS_PROXY``/``HTTP_PROXY`` from the
  environment and ignores ``NO_PROXY``; without a proxy it calls ``urlopen``, whose
  default opener applies the environment's proxies too. So a localhost webhook (tests,
  a local relay) would be sent to whatever proxy the environment names. Here the
  proxies are chosen per URL (:func:`proxies_for`): loopback hosts always go direct,
  ``SIGNALBUS_SLACK_PROXY`` wins when set, otherwise the environment's proxies apply
  unless ``NO_PROXY`` exempts the host. The client opens the URL with an opener built
  from exactly that choice.
* **Logging.** slack_sdk logs the full request URL at DEBUG level and connection
  errors at ERROR; the webhook URL is a bearer secret. The client gets a logger whose
  filter replaces the URL (and its path) with :func:`redact_url`'s form in every record.
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from slack_sdk.webhook import WebhookClient, WebhookResponse

__all__ = ["RedactingFilter", "proxies_for", "redact", "redact_url", "webhook_client"]

log = logging.getLogger("signalbus_slack")


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/***``: scheme, host and port only; path, query, user gone."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<webhook URL redacted>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme or '?'}://{host}{port}/***"


def _secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    out = [url]
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    if len(tail) > 1:
        out.append(tail)
    if len(parts.path) > 1:
        out.append(parts.path)
    return out


def redact(text: str, url: str) -> str:
    """``text`` with the webhook ``url`` (and its secret path) replaced by its redacted form."""
    for secret in _secrets(url):
        text = text.replace(secret, redact_url(url) if secret == url else "/***")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites log records so that they never carry the webhook URL."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.url)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxies_for(url: str, explicit: str | None) -> dict[str, str]:
    """The proxies (``{"http": ..., "https": ...}``, or ``{}`` for direct) to reach ``url``."""
    host = urlsplit(url).hostname
    if is_loopback(host):
        return {}
    if explicit:
        return {"http": explicit, "https": explicit}
    if host and urllib.request.proxy_bypass(host):
        return {}
    env = urllib.request.getproxies()
    return {scheme: env[scheme] for scheme in ("http", "https") if env.get(scheme)}


class _Client(WebhookClient):
    """A ``WebhookClient`` that opens URLs through an opener with the proxies we chose."""

    def __init__(self, url: str, *, timeout: float, proxies: dict[str, str],
                 logger: logging.Logger) -> None:
        # proxy= is only what slack_sdk shows; a non-empty value keeps it from reading
        # (and logging) the proxy environment variables. _perform_http_request_internal
        # below uses self._opener instead.
        super().__init__(url, timeout=timeout,  # type: ignore[arg-type]
                         proxy=proxies.get("https") or proxies.get("http") or "direct",
                         logger=logger, retry_handlers=[])
        handlers: list[Any] = [urllib.request.ProxyHandler(proxies)]
        self._opener = urllib.request.build_opener(*handlers)

    def _perform_http_request_internal(self, url: str, req: urllib.request.Request
                                       ) -> WebhookResponse:
        with self._opener.open(req, timeout=self.timeout) as http_resp:
            charset = http_resp.headers.get_content_charset() or "utf-8"
            body = http_resp.read().decode(charset, "replace")
            return WebhookResponse(url=url, status_code=http_resp.status, body=body,
                                   headers=dict(http_resp.headers.items()))


def webhook_client(url: str, *, timeout: float, proxy: str | None) -> WebhookClient:
    """A slack_sdk ``WebhookClient`` for ``url``: no retries or sleeping inside it,
    proxies chosen by :func:`proxies_for`, and a logger that never shows the URL."""
    # A logger of its own, not registered with logging's manager (so it goes away with
    # the client), whose records propagate to "signalbus_slack" after redaction.
    logger = logging.Logger("signalbus_slack.client")
    logger.parent = log
    logger.addFilter(RedactingFilter(url))
    return _Client(url, timeout=timeout, proxies=proxies_for(url, proxy), logger=logger)
