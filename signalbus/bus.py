"""The :class:`SignalBus` facade: what ``signalbus.init_app``, ``attach`` and ``emit`` use.

It holds no per-app state: a Flask app's runtime lives in the app
(:mod:`signalbus.flask`), a plain SQLAlchemy bus's in the facade's one
:class:`~signalbus.runtime.Runtime`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import blinker
from sqlalchemy.orm import scoped_session

from . import capture, flask
from .errors import ConfigurationError
from .events import Event
from .muting import active, is_muted
from .plugins import start as start_plugins
from .runtime import RUNTIME_KEY, Runtime, make_event
from .settings import DEFAULTS
from .sqlite import check_target

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["SignalBus"]

log = logging.getLogger("signalbus")


class SignalBus:
    """The signalbus extension.

    ``app.extensions["signalbus"]`` is the bus; the app's own state (settings, plugin
    receivers, delivery) is its :class:`Runtime`, from :meth:`runtime`.

    Flask::

        bus = SignalBus()            # or signalbus.bus, the default one
        bus.init_app(app, db=db)     # in the app factory

    Plain SQLAlchemy::

        bus = SignalBus()
        bus.attach(sessionmaker(engine), config={"SIGNALBUS_DELIVERY": "inline"})
    """

    def __init__(self, app: Any = None, *, db: Any = None) -> None:
        self.db = db
        self._plain: Runtime | None = None
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any, db: Any = None) -> None:
        """Register the bus on a Flask app.

        Reads, with ``app.config.setdefault``: ``SIGNALBUS_DELIVERY`` (``"inline"`` or
        ``"outbox"``), ``SIGNALBUS_REDACT`` (substrings of attribute names
        left out of payloads), ``SIGNALBUS_MUTED``, ``SIGNALBUS_PLUGINS`` (explicit list,
        in order), ``SIGNALBUS_DISABLED_PLUGINS``, ``SIGNALBUS_PLUGINS_STRICT``,
        ``SIGNALBUS_MAX_DEPTH`` (the chain limit of receivers committing changes), and
        the delivery mode's own keys. Loads the installed plugins, checks their
        requirements, and wires the Flask-SQLAlchemy session of ``db`` (or of the ``db``
        given to the constructor, else the Flask-SQLAlchemy extension registered on
        ``app``; with bindings declared and none of these, a warning is logged naming
        ``db=``).
        """
        flask.init_app(self, app, db if db is not None else self.db)

    def attach(self, target: Any, *, config: Mapping[str, Any] | None = None,
               plugins: bool = True) -> Runtime:
        """Attach to a plain SQLAlchemy ``sessionmaker``, ``scoped_session``, ``Session``,
        ``async_sessionmaker``, ``async_scoped_session`` or ``AsyncSession``.

        ``config`` takes the same ``SIGNALBUS_*`` keys as a Flask app's config; the first
        ``attach`` makes the bus's runtime, later ones wire more session factories to
        it. ``plugins=False`` skips loading entry-point plugins.
        """
        with self._lock:
            if self._plain is None:
                factory = target if callable(target) else None
                runtime = Runtime(self, dict(DEFAULTS, **(config or {})), session_factory=factory)
                self._plain = runtime
                if plugins:
                    start_plugins(runtime)
            elif config is not None:
                raise ConfigurationError(
                    "this bus is already attached; pass config= on the first attach() only, "
                    "or make another SignalBus() for different settings."
                )
            runtime = self._plain
        check_target(target)

        def resolve(session: Session) -> Runtime:
            # inside an app context of an app this bus is registered on, that app's
            # runtime; elsewhere the plain one
            return flask.resolve_current_app(session) or runtime

        if not capture.attach_session(target, resolve):
            log.debug("%r was already attached", target)
        return runtime

    @property
    def attached(self) -> bool:
        """Whether :meth:`attach` has wired a session factory (or session) to this bus."""
        return self._plain is not None

    def runtime(self, app: Any = None) -> Runtime:
        """The runtime of ``app`` (the current Flask app by default), else the plain one."""
        if app is None:
            app = flask.current_app_or_none()
        if app is not None:
            rt = app.extensions.get(RUNTIME_KEY)
            if isinstance(rt, Runtime):
                return rt
        if self._plain is not None:
            return self._plain
        raise ConfigurationError(
            "no signalbus is set up here: call signalbus.init_app(app) (and work inside "
            "its app context) or signalbus.attach(sessionmaker)."
        )

    def emit(self, signal: str | blinker.NamedSignal, data: Mapping[str, Any], *,
             session: Session | None = None) -> Event:
        """Send a domain event not tied to a row.

        With ``session`` (a ``Session``, or a ``scoped_session`` such as
        Flask-SQLAlchemy's ``db.session``, meaning its current session), the event joins
        that session's transaction (beginning one if none is active) and is delivered
        only if it commits, in order with the row events. Without, it is delivered (or
        stored, in outbox mode) now. Raises :class:`ConfigurationError` for a signal name
        nobody declared.
        """
        if session is None:
            return self.runtime().emit(signal, data)
        if isinstance(session, scoped_session):  # Flask-SQLAlchemy's db.session
            session = session()
        event = make_event(signal, data)
        st = capture.session_state(session)
        sink = st.tracker.resolve(session) or self.runtime()
        if not is_muted(event.signal, active(sink.muted)):
            capture.emit_into(session, None, event, sink)
        return event

