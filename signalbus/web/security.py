"""Who gets in, and which POSTs count: the page's authorization check, its CSRF token
and the headers every response carries."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Any

from flask import Response, abort, current_app, request, session

__all__ = ["FIELD", "check_csrf", "csrf_token", "harden"]

SESSION_KEY = "signalbus_csrf"
"""Where the session keeps the page's CSRF token."""
FIELD = "csrf_token"
"""The form field (or ``X-CSRF-Token`` header) a POST carries it in."""


def csrf_token() -> str:
    """This session's token (made on first use): every form of the page carries it."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def check_csrf() -> None:
    """Refuse (``400``) a POST whose token is missing or not this session's."""
    expected = session.get(SESSION_KEY)
    sent = request.form.get(FIELD) or request.headers.get("X-CSRF-Token") or ""
    if not isinstance(expected, str) or not sent or \
            not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(400, description="This form is out of date or did not come from this page "
                               "(its CSRF token is missing or wrong). Reload the page and "
                               "try again.")


def authorized(check: Callable[[], Any]) -> bool:
    """Whether the host's check lets this request in. A check that raises counts as a
    no (and is logged by Flask's error handling of the app, not shown)."""
    try:
        return bool(check())
    except Exception:
        current_app.logger.exception("signalbus.web: the authorization check raised; "
                                     "the request was refused")
        return False


def harden(response: Response) -> Response:
    """Headers of every page: no framing (the retry buttons cannot be clickjacked), no
    script or style from anywhere else, nothing cached, no referrer leaving the site."""
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    return response
