"""The ``slack`` entry point: posts to Slack incoming webhooks when signals fire.

Config keys (Flask ``app.config`` or the mapping given to ``attach``):

``SIGNALBUS_SLACK_WEBHOOK_URL``
    the incoming-webhook URL used by every rule without its own; default ``None``.
    It is a secret: it never appears in logs, exceptions or ``flask signalbus list``.
``SIGNALBUS_SLACK_RULES``
    rule name → rule; default :data:`DEFAULT_RULES`. A rule has ``text`` (a Jinja
    template, required), ``section`` (the Block Kit section's mrkdwn template; default:
    the text; ``False`` for no blocks), ``webhook_url`` (a per-rule URL) and
    ``signal`` (default: the rule's name). Templates see ``event``, ``data``, ``rule``;
    every value they print is escaped for Slack (``&``, ``<``, ``>``), so data cannot
    ping ``<!channel>`` or forge links; the template's own text is not escaped.
``SIGNALBUS_SLACK_TIMEOUT``
    HTTP timeout in seconds; default ``10``.
``SIGNALBUS_SLACK_PROXY``
    a proxy URL for the webhook requests; default ``None``: the environment's
    ``HTTPS_PROXY``/``HTTP_PROXY`` apply, minus ``NO_PROXY`` hosts. Loopback URLs are
    always reached directly.

Exception contract of a rule's receiver: a 429 raises ``signalbus.Retry(after=...)``
with the ``Retry-After`` delay (seconds or HTTP-date); a 5xx, a timeout or a
connection error raises ``Retry``; any other 4xx raises ``signalbus.Permanent``.
Nothing sleeps in the receiver's thread.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import http.client
import logging
import math
import types
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Template, TemplateSyntaxError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from signalbus import ConfigurationError, Event, Permanent, Retry, signals
from signalbus.plugins import PluginBus

from .http import redact, redact_url, webhook_client

__all__ = [
    "CONFIG_DEFAULTS",
    "DEFAULT_RULES",
    "SlackPostError",
    "SlackRule",
    "escape_mrkdwn",
    "parse_retry_after",
    "receiver_name",
    "setup",
]

log = logging.getLogger("signalbus_slack")

DEFAULT_RULES: Mapping[str, Mapping[str, Any]] = types.MappingProxyType({
    "user_registered": types.MappingProxyType({
        "text": "New user registered: {{ data.name or data.email or event.pk }}"
                "{% if data.plan %} (plan: {{ data.plan }}){% endif %}",
    }),
    "issue_raised": types.MappingProxyType({
        "text": ":rotating_light: Issue raised: "
                "{{ data.title or data.summary or data.name or ('#' ~ event.pk) }}",
    }),
})
"""The rules used when ``SIGNALBUS_SLACK_RULES`` is not set (read-only). Setting the key
replaces them; start from ``{**DEFAULT_RULES, ...}`` to keep them."""

CONFIG_DEFAULTS: dict[str, Any] = {
    "SIGNALBUS_SLACK_WEBHOOK_URL": None,
    "SIGNALBUS_SLACK_RULES": DEFAULT_RULES,
    "SIGNALBUS_SLACK_TIMEOUT": 10.0,
    "SIGNALBUS_SLACK_PROXY": None,
}
"""Every ``SIGNALBUS_SLACK_*`` key with its default."""

_KEYS = frozenset({"signal", "text", "section", "webhook_url"})
SECTION_LIMIT = 3000
"""Slack's limit on a section block's text; longer text is cut with an ellipsis."""


class SlackPostError(RuntimeError):
    """Posting failed for a reason that is neither an HTTP answer nor a network error."""


def receiver_name(rule: str) -> str:
    """The durable receiver name of a rule: ``"signalbus_slack:<rule>"``."""
    return f"signalbus_slack:{rule}"


def escape_mrkdwn(value: Any) -> str:
    """A value as Slack text: ``&``, ``<`` and ``>`` escaped, ``None``/undefined empty."""
    if value is None or isinstance(value, Undefined):
        return ""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date).

    ``None`` when the header is missing or unreadable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - (now or dt.datetime.now(dt.UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value[0] if isinstance(value, list) else value)
    return None


@dataclasses.dataclass
class SlackRule:
    """One rule; calling it (the receiver) posts the event to the rule's webhook."""

    name: str
    signal: str
    url: str
    text: Template
    section: Template | None
    timeout: float
    proxy: str | None

    @property
    def webhook(self) -> str:
        """The webhook URL, redacted (safe to show)."""
        return redact_url(self.url)

    def payload(self, event: Event) -> dict[str, Any]:
        """The JSON body posted for ``event``: ``text`` plus one mrkdwn section block."""
        context = {"event": event, "data": event.data, "rule": self.name}
        text = self.text.render(context).strip()
        body: dict[str, Any] = {"text": text}
        if self.section is not None:
            section = self.section.render(context).strip()
            if len(section) > SECTION_LIMIT:
                section = section[:SECTION_LIMIT - 1] + "…"
            if section:
                body["blocks"] = [{"type": "section", "text": {"type": "mrkdwn", "text": section}}]
        return body

    def __call__(self, sender: Any, event: Event, **kwargs: Any) -> None:
        """Post ``event``; see the module docstring for the exception contract."""
        where = (f"signalbus-slack rule {self.name!r} ({event.signal} event {event.id}), "
                 f"webhook {self.webhook}")
        body = self.payload(event)
        client = webhook_client(self.url, timeout=self.timeout, proxy=self.proxy)
        try:
            response = client.send_dict(body)
        except (OSError, http.client.HTTPException) as exc:
            # connection refused, DNS, timeout, TLS, a dropped connection (URLError is an
            # OSError). `from None`: the chained exception could carry the URL.
            reason = getattr(exc, "reason", exc)
            raise Retry(message=redact(
                f"{where}: could not post (timeout {self.timeout:g}s): "
                f"{type(reason).__name__}: {reason}; will retry", self.url)) from None
        except Exception as exc:
            raise SlackPostError(redact(f"{where}: {type(exc).__name__}: {exc}", self.url)) \
                from None
        status = response.status_code
        if 200 <= status < 300:
            log.info("%s: posted", where)
            return
        answer = redact(f"{status} {(response.body or '').strip()[:200]}", self.url)
        after = parse_retry_after(_header(response.headers or {}, "retry-after"))
        if status == 429:
            raise Retry(after=after, message=f"{where}: rate limited ({answer}); retry after "
                        + (f"{after:g}s" if after is not None else "the backoff delay"))
        if status >= 500:
            raise Retry(after=after, message=f"{where}: Slack answered {answer}; will retry")
        raise Permanent(f"{where}: Slack refused the post: {answer}")

    def __repr__(self) -> str:
        return f"<signalbus-slack receiver for rule {self.name!r} -> {self.webhook}>"


def _check_url(url: Any, key: str) -> str:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{key} is not an http(s) URL with a host (value not shown: it is a secret); "
            "set it to the incoming-webhook URL Slack gave you."
        )
    return url  # type: ignore[no-any-return]


def _timeout(value: Any) -> float:
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = 0.0
    if not timeout > 0:
        raise ConfigurationError(
            f"SIGNALBUS_SLACK_TIMEOUT is {value!r}; it must be a positive number of seconds."
        )
    return timeout


def _compile(env: SandboxedEnvironment, source: Any, where: str) -> Template:
    if not isinstance(source, str):
        raise ConfigurationError(f"{where} must be a Jinja template string, not "
                                 f"{type(source).__name__}.")
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise ConfigurationError(f"{where} does not compile: {exc.message}") from None


def parse_rules(config: Mapping[str, Any]) -> tuple[list[SlackRule], list[str]]:
    """The rules that can post, and why the others (default rules only) were skipped."""
    explicit = config.get("SIGNALBUS_SLACK_RULES") is not DEFAULT_RULES
    rules = config.get("SIGNALBUS_SLACK_RULES")
    if not isinstance(rules, Mapping):
        raise ConfigurationError(
            f"SIGNALBUS_SLACK_RULES must be a mapping of rule name to rule, not "
            f"{type(rules).__name__}."
        )
    default_url = config.get("SIGNALBUS_SLACK_WEBHOOK_URL")
    if default_url:
        _check_url(default_url, "SIGNALBUS_SLACK_WEBHOOK_URL")
    timeout = _timeout(config.get("SIGNALBUS_SLACK_TIMEOUT"))
    proxy = config.get("SIGNALBUS_SLACK_PROXY") or None
    env = SandboxedEnvironment(autoescape=False, finalize=escape_mrkdwn)
    out, skipped = [], []
    for name, spec in rules.items():
        where = f"SIGNALBUS_SLACK_RULES[{name!r}]"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where} must be a mapping, not {type(spec).__name__}.")
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise ConfigurationError(
                f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; the keys are "
                f"{', '.join(sorted(_KEYS))}."
            )
        if not spec.get("text"):
            raise ConfigurationError(f"{where} needs 'text'.")
        url = spec.get("webhook_url") or default_url
        if not url:
            reason = "no webhook URL: set SIGNALBUS_SLACK_WEBHOOK_URL (or the rule's webhook_url)"
            if explicit:
                raise ConfigurationError(f"{where} cannot post: {reason}.")
            skipped.append(f"default rule {name!r} skipped: {reason}")
            continue
        signal_name = str(spec.get("signal") or name)
        if not explicit and not signals.is_declared(signal_name):
            # a default rule for a signal this app never sends
            skipped.append(f"default rule {name!r} skipped: signal {signal_name!r} is not "
                           "declared by the app")
            continue
        section_src = spec.get("section", spec["text"])
        out.append(SlackRule(
            name=str(name),
            signal=signal_name,
            url=_check_url(url, f"{where}['webhook_url']"),
            text=_compile(env, spec["text"], f"{where}['text']"),
            section=(_compile(env, section_src, f"{where}['section']")
                     if section_src is not False else None),
            timeout=timeout,
            proxy=proxy,
        ))
    return out, skipped


def setup(bus: PluginBus) -> None:
    """Connect a receiver per Slack rule to the bus (the ``slack`` entry point).

    Works with a Flask app and with a plain ``attach``. A default rule without a
    webhook URL is skipped (shown by ``flask signalbus list``); an explicitly
    configured rule without one raises :class:`signalbus.ConfigurationError`.
    """
    config = bus.config
    if isinstance(config, MutableMapping):
        for key, value in CONFIG_DEFAULTS.items():
            if key not in config:
                config[key] = value  # every default is immutable
    else:
        config = {**CONFIG_DEFAULTS, **config}
    rules, skipped = parse_rules(config)
    for line in skipped:
        bus.describe(line)
        log.info("signalbus-slack: %s", line)
    for rule in rules:
        bus.connect(rule.signal, rule, name=receiver_name(rule.name))
        bus.describe(f"rule {rule.name!r}: {rule.signal} -> {rule.webhook}")
