"""The Flask layer: wires a bus runtime into an app.

Flask itself is imported only inside these functions, so ``import signalbus`` does not
need Flask. Above the runtime and plugins; below the :class:`~signalbus.SignalBus`
facade, which calls :func:`init_app`.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from . import capture, contexts, plugins
from .bindings import registry
from .errors import ConfigurationError
from .runtime import RUNTIME_KEY, Runtime
from .settings import DEFAULTS
from .sqlite import check_engine

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["current_app_or_none", "find_db", "init_app"]

log = logging.getLogger("signalbus")


def current_app_or_none() -> Any:
    """The current Flask app, or ``None`` outside an app context (or without Flask).

    Flask is looked up in ``sys.modules``, never imported here: a process that has not
    imported Flask has no app context. (Capture asks twice per transaction; an
    ``import`` statement per call cost 8 µs inside a flush.)
    """
    flask = sys.modules.get("flask")
    if flask is None:  # Flask is an optional dependency, and not in use here
        return None
    if not flask.has_app_context():
        return None
    return flask.current_app._get_current_object()


def resolve_current_app(session: Session) -> Runtime | None:
    # One Flask-SQLAlchemy db may serve many apps (the app-factory pattern): each
    # transaction goes to the bus of the app it runs in.
    app = current_app_or_none()
    if app is None:
        return None
    runtime = app.extensions.get(RUNTIME_KEY)
    return runtime if isinstance(runtime, Runtime) else None


def find_db(app: Any, *, attached: bool = False) -> Any:
    """The Flask-SQLAlchemy extension registered on ``app`` (``db.init_app(app)`` puts it
    in ``app.extensions["sqlalchemy"]``), for an ``init_app`` called without ``db=``.

    When there is none, bindings are declared and the bus has no session factory
    ``attached`` either (plain SQLAlchemy sessions in a Flask app: ``bus.attach(...)``),
    the bindings would capture nothing for this app: a WARNING on the ``signalbus``
    logger names ``db=``. It is not an error, because bindings are declarations of the
    whole process and an app without a database (one that only emits, a test's small
    app) may legitimately share the process with the apps that have one.
    """
    db = app.extensions.get("sqlalchemy")
    if db is not None and _is_flask_sqlalchemy(db):
        return db
    if registry.bindings and not attached:
        declared = ", ".join(b.describe() for b in registry.bindings[:2])
        more = f" and {len(registry.bindings) - 2} more" if len(registry.bindings) > 2 else ""
        log.warning(
            "signalbus.init_app(app) found no Flask-SQLAlchemy extension on app %r and was "
            "given no db=, so the bindings (%s%s) capture nothing in it. Call "
            "db.init_app(app) before signalbus.init_app(app), or pass the extension: "
            "signalbus.init_app(app, db=db). (Plain SQLAlchemy sessions: "
            "bus.attach(sessionmaker), then bus.init_app(app).)", app.name, declared, more,
        )
    return None


def _is_flask_sqlalchemy(obj: Any) -> bool:
    try:
        from flask_sqlalchemy import SQLAlchemy
    except ImportError:  # something else registered under that name
        return False
    return isinstance(obj, SQLAlchemy)


def init_app(bus: Any, app: Any, db: Any) -> None:
    """Register ``bus`` (a :class:`~signalbus.SignalBus`) and a new runtime on ``app``."""
    if "signalbus" in app.extensions or RUNTIME_KEY in app.extensions:
        raise RuntimeError(
            "A 'SignalBus' instance has already been registered on this Flask app. Import "
            "and use that instance instead."
        )
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    if db is None:
        db = find_db(app, attached=bus.attached)
    factory = db.session if db is not None else None
    runtime = Runtime(bus, app.config, app=app, db=db, session_factory=factory)
    app.extensions["signalbus"] = bus
    app.extensions[RUNTIME_KEY] = runtime
    try:
        plugins.start(runtime)
    except BaseException:
        # a failed init leaves the app as it was, so the error can be fixed and retried
        del app.extensions["signalbus"]
        del app.extensions[RUNTIME_KEY]
        raise
    request_context(app)
    if db is not None:
        with app.app_context():
            for engine in db.engines.values():
                check_engine(engine)
        capture.attach_session(db.session, resolve_current_app)


_TOKEN = "_signalbus_context_token"


def request_context(app: Any) -> None:
    """Fill :func:`signalbus.context` for each request with ``SIGNALBUS_CONTEXT``.

    ``SIGNALBUS_CONTEXT`` is a callable taking no argument, called in ``before_request``
    (the request, ``g`` and Flask-Login's ``current_user`` are available) and returning
    a mapping such as ``{"actor": current_user.email, "request_id": ...}``; the values
    are set until ``teardown_request``. ``None`` (the default) sets nothing.
    """
    make = app.config.get("SIGNALBUS_CONTEXT")
    if make is None:
        return
    if not callable(make):
        raise ConfigurationError(
            f"SIGNALBUS_CONTEXT is {make!r}; set it to a function of no argument returning "
            "the context of a request, e.g. lambda: {'actor': current_user.email}."
        )
    from flask import g

    def enter() -> None:
        setattr(g, _TOKEN, contexts.enter(make(), "SIGNALBUS_CONTEXT()"))

    def leave(exc: BaseException | None) -> None:
        token = g.pop(_TOKEN, None)
        if token is not None:
            contexts.leave(token)

    app.before_request(enter)
    app.teardown_request(leave)
