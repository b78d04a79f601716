"""signalbus-plans: subscribe users to the services of their plan.

A signalbus plugin (entry point ``plans`` in the ``signalbus.plugins`` group). It
listens to the host's ``user_registered``, ``user_plan_changed`` and ``user_deleted``
signals, keeps the ``plan_subscriptions`` table in step, and sends ``plan_subscribed``
and ``plan_cancelled``. See the package README for the settings.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, scoped_session

from .plugin import EXTENSION as EXTENSION
from .plugin import Plans as Plans
from .plugin import Settings as Settings
from .plugin import plan_cancelled as plan_cancelled
from .plugin import plan_subscribed as plan_subscribed
from .plugin import setup as setup
from .table import create_all as create_all
from .table import include_in as include_in
from .table import metadata as metadata
from .table import plan_subscriptions as plan_subscriptions

__all__ = [
    "Plans",
    "Settings",
    "active_services",
    "create_all",
    "include_in",
    "metadata",
    "plan_cancelled",
    "plan_subscribed",
    "plan_subscriptions",
    "setup",
]


def active_services(user_id: Any, *, session: Session | None = None) -> set[str]:
    """The services ``user_id`` is actively subscribed to.

    Reads with ``session`` when given. Otherwise it needs a Flask app context of an app
    whose signalbus loaded this plugin, and reads through that bus's session factory,
    i.e. the host's scoped ``db.session``: the query runs in the caller's current
    transaction (seeing its uncommitted writes) and Flask-SQLAlchemy ends it at the end
    of the request as usual. Outside Flask (``attach``), pass ``session=``.
    """
    if session is not None:
        return _read(session, user_id)
    plans = _current_plans()
    factory = plans.session_factory
    if isinstance(factory, scoped_session):
        return _read(factory(), user_id)
    with factory() as own:
        return _read(own, user_id)


def _read(session: Session, user_id: Any) -> set[str]:
    t = plan_subscriptions
    stmt = select(t.c.service).where(t.c.user_id == str(user_id), t.c.active.is_(True))
    return set(session.scalars(stmt))


def _current_plans() -> Plans:
    from signalbus import ConfigurationError

    try:
        from flask import current_app, has_app_context
    except ImportError:  # Flask is optional for plain SQLAlchemy hosts
        has_app_context = None  # type: ignore[assignment]
    if has_app_context is None or not has_app_context():
        raise ConfigurationError(
            "signalbus_plans.active_services() without session= needs a Flask app "
            "context (of an app whose signalbus loaded the 'plans' plugin); outside "
            "Flask, pass session=."
        )
    plans = current_app.extensions.get(EXTENSION)
    if plans is None:
        raise ConfigurationError(
            "the 'plans' signalbus plugin is not loaded on this app: install "
            "signalbus-plans, call signalbus.init_app(app, db=db), and check "
            "SIGNALBUS_PLUGINS / SIGNALBUS_DISABLED_PLUGINS (see 'flask signalbus list')."
        )
    assert isinstance(plans, Plans)
    return plans
