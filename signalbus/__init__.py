"""signalbus: committed SQLAlchemy row changes as named blinker signals.

The whole public promise is listed here; see the README and ``docs/`` for the guide.
"""

from __future__ import annotations

from typing import Any

from . import sqlite as sqlite
from .bindings import bind as bind
from .bus import SignalBus as SignalBus
from .conditions import changed as changed
from .contexts import context as context
from .errors import BindingError as BindingError
from .errors import ConfigurationError as ConfigurationError
from .errors import Permanent as Permanent
from .errors import PluginError as PluginError
from .errors import Retry as Retry
from .errors import SignalBusError as SignalBusError
from .errors import SignalBusWarning as SignalBusWarning
from .errors import UnserialisableValue as UnserialisableValue
from .events import Event as Event
from .muting import muted as muted
from .signals import receiver as receiver
from .signals import signal as signal

__all__ = [
    "BindingError",
    "ConfigurationError",
    "Event",
    "Permanent",
    "PluginError",
    "Retry",
    "SignalBus",
    "SignalBusError",
    "SignalBusWarning",
    "UnserialisableValue",
    "attach",
    "bind",
    "bus",
    "changed",
    "context",
    "emit",
    "init_app",
    "muted",
    "receiver",
    "signal",
    "sqlite",
]

bus: SignalBus = SignalBus()
"""The default bus; :func:`init_app`, :func:`attach` and :func:`emit` use it."""


def init_app(app: Any, db: Any = None) -> None:
    """Register the default :data:`bus` on a Flask app (see :meth:`SignalBus.init_app`)."""
    bus.init_app(app, db)


def attach(session_or_factory: Any, **kwargs: Any) -> Any:
    """Attach the default :data:`bus` to plain SQLAlchemy (see :meth:`SignalBus.attach`)."""
    return bus.attach(session_or_factory, **kwargs)


def emit(signal: Any, data: Any, *, session: Any = None) -> Event:
    """Send a domain event not tied to a row (see :meth:`SignalBus.emit`).

    Without a session it goes to the bus of the current Flask app, else the default bus.
    """
    return bus.emit(signal, data, session=session)
