"""The operator's page for the outbox: a Flask blueprint the host registers.

::

    from flask_login import current_user
    import signalbus.web

    app.register_blueprint(
        signalbus.web.blueprint(authorize=lambda: current_user.is_authenticated
                                and current_user.is_admin),
        url_prefix="/ops/outbox",
    )

Pages: the overview (counts per state, per signal and per receiver, the age of the
oldest pending work, a chart of the work settled per minute over the last hour), the
dead and failing deliveries (paginated, with retry for one, a selection or all),
an event (its payload and what became of each receiver), replay by signal and time,
search by event id.

Nobody gets in by default. The page needs an authorization check from the host:
``authorize=`` here, or the app setting ``SIGNALBUS_WEB_AUTHORIZE``; a callable
without arguments, run for every request of the page (GET and POST) inside the
request context, returning true to let the request in. Without one, registering the
blueprint raises :class:`~signalbus.errors.ConfigurationError`; a request it turns
down gets ``403``. Actions are POSTs carrying a per-session CSRF token (so the app
needs a ``SECRET_KEY``); a POST without the right token gets ``400``. The page never
shows a column named like a redacted one (``SIGNALBUS_REDACT``), and every stored
error and payload text goes through :func:`signalbus.redaction.redact` (webhook URLs,
``user:password@``, tokens, ``Bearer`` credentials).

Everything it shows comes from :mod:`signalbus.outbox.admin` and
:mod:`signalbus.outbox.browse`. Templates and styles ship with the package: the page
loads nothing from another site, and runs no inline script (its
``Content-Security-Policy`` forbids it).
"""

from __future__ import annotations

from .views import AUTHORIZE_KEY, blueprint

__all__ = ["AUTHORIZE_KEY", "blueprint"]
