"""Exceptions and warnings raised by signalbus, and the two a receiver raises."""

from __future__ import annotations

__all__ = [
    "BindingError",
    "ConfigurationError",
    "NotConfigured",
    "Permanent",
    "PluginError",
    "Retry",
    "SignalBusError",
    "SignalBusWarning",
    "UnserialisableValue",
]


class SignalBusError(Exception):
    """Base class of the errors signalbus raises itself."""


class ConfigurationError(SignalBusError):
    """A setting, a binding or the wiring of the bus is wrong; the message says how to fix it."""


class BindingError(ConfigurationError):
    """A :func:`signalbus.bind` call names something that does not exist."""


class UnserialisableValue(SignalBusError, TypeError):
    """A value captured for an event is not a JSON value and has no normalisation rule.

    Raised at flush time, so the transaction that produced the value fails loudly
    instead of committing a change whose event could never be stored.
    """


class PluginError(ConfigurationError):
    """A plugin could not be loaded or its requirements are not met.

    :attr:`plugin` is the entry point name, :attr:`distribution` the installed
    distribution that declared it (``None`` when unknown).
    """

    def __init__(self, plugin: str, message: str, *, distribution: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.distribution = distribution


class NotConfigured(SignalBusError):  # noqa: N818 - reads as the state it reports
    """Raised by a plugin's ``plugin(bus)``/``setup(bus)`` to say that it is installed
    but not configured in this app, so it is skipped.

    Unlike a failure, it is logged once per process at INFO and the plugin is listed as
    ``skipped: <message>`` by ``flask signalbus list``; what it connected so far is
    disconnected. A plugin named in ``SIGNALBUS_PLUGINS`` was asked for explicitly, so
    there it is a failure (an error under ``SIGNALBUS_PLUGINS_STRICT``). The message
    should name the setting that turns the plugin on.
    """


class Retry(Exception):  # noqa: N818 - the public name is fixed by the contract
    """Raised by a receiver to ask for the delivery to be tried again later.

    ``after`` is the earliest delay in seconds before the next attempt (``None``
    lets the backoff policy decide). Inline delivery cannot retry: there the
    exception is logged like any other receiver error.
    """

    def __init__(self, after: float | None = None, message: str | None = None) -> None:
        if message is None:
            message = "retry requested" if after is None else f"retry requested after {after}s"
        super().__init__(message)
        self.after = after


class Permanent(Exception):  # noqa: N818 - the public name is fixed by the contract
    """Raised by a receiver to say that retrying this delivery is pointless.

    The outbox marks the delivery ``dead`` at once and keeps the message.
    """


class SignalBusWarning(UserWarning):
    """Base class of the warnings signalbus emits."""
