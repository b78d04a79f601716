"""One redaction for every text signalbus writes about a failure: log lines, stored
errors, CLI output.

:func:`redact` cuts what commonly carries a secret out of free text:

* URLs keep their scheme and host (``https://hooks.slack.com/…``): the path and query of
  a webhook URL are the secret; a ``user:password@`` is removed;
* ``user:password@host`` outside a URL (a DSN without a scheme) loses its credentials;
* ``token=…``, ``password=…``, ``secret=…``, ``api_key=…``, ``access_token=…`` (in a
  query string, a DSN, ``key=value`` text) keep their name and lose their value;
* ``Bearer …`` / ``Basic …`` credentials in an ``Authorization`` header become ``…``.

It has no imports from the rest of signalbus, so every layer can use it. Importing it
installs :class:`LogFilter` on the ``signalbus`` logger, so that every line that logger
writes — its message, its arguments and the traceback of ``exc_info`` — is redacted
before any handler formats it.
"""

from __future__ import annotations

import logging
import re
import traceback

__all__ = ["LogFilter", "describe_error", "format_exception", "redact"]

REDACTED = "…"

_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^\s/?#'\"<>]*)([^\s'\"<>]*)", re.I)
_USERINFO = re.compile(r"(?<![\w/])([\w.%+-]+):([^\s@/:'\"]+)@(?=[\w.-]+)")
_KEYVALUE = re.compile(
    r"(?i)\b([\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|signature)"
    r"[\w-]*)([\"']?\s*(?:=|:\s)\s*)(\"[^\"]*\"|'[^']*'|[^\s&;,'\"]+)"
)
_AUTH = re.compile(r"\b([Bb]earer|BEARER|Basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def _url(match: re.Match[str]) -> str:
    scheme, authority, rest = match.group(1), match.group(2), match.group(3)
    host = authority.rpartition("@")[2]
    return f"{scheme}://{host}" + (f"/{REDACTED}" if rest.strip("/") else "")


def redact(text: str) -> str:
    """``text`` with URLs cut to scheme and host, credentials and secret values removed."""
    text = _URL.sub(_url, text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    text = _KEYVALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _AUTH.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


def describe_error(exc: BaseException, limit: int = 2000) -> str:
    """``Type: message`` of an exception, redacted and cut to ``limit`` characters (what
    the outbox stores as ``last_error``)."""
    message = str(exc)
    text = redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_exception(exc: BaseException) -> str:
    """The traceback of ``exc``, redacted (for a log line that would print it)."""
    return redact("".join(traceback.format_exception(exc)).rstrip())


class LogFilter(logging.Filter):
    """Redacts a log record in place: its message (arguments merged) and the traceback
    of its ``exc_info`` (kept as ``exc_text``, which formatters print instead of
    formatting the exception again). ``exc_info`` itself stays for handlers that look
    at the exception object."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_signalbus_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it
            return True
        record.msg, record.args = redact(message), ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = format_exception(record.exc_info[1])
        record._signalbus_redacted = True
        return True


_FILTER = LogFilter()
_LOGGER = logging.getLogger("signalbus")
if not any(isinstance(f, LogFilter) for f in _LOGGER.filters):
    _LOGGER.addFilter(_FILTER)
