"""The ``journal`` entry point: which signals to journal, and where.

By default the journal is connected with ``bus.connect_all``: it receives every
committed event of the app, whatever its signal and whenever that signal was declared
(the host's bindings, ``plan_subscribed`` of signalbus-plans, …), and never the
uncommitted ``phase="flush"`` events. ``SIGNALBUS_JOURNAL_SIGNALS`` narrows it to a list
of signals; ``SIGNALBUS_JOURNAL_EXCLUDE`` leaves some out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import signalbus
from signalbus import Event
from signalbus.errors import NotConfigured
from signalbus.plugins import PluginBus

from .journal import Journal

__all__ = ["EXTENSION", "RECEIVER_NAME", "Settings", "journal_dir", "setup"]

log = logging.getLogger("signalbus")

EXTENSION = "signalbus_journal"
"""Key of the per-app :class:`~signalbus_journal.Journal` in ``app.extensions``."""

RECEIVER_NAME = "signalbus_journal:append"
"""The durable receiver name (the same on every signal), which the outbox tracks."""

DEFAULT_DIRNAME = "signalbus-journal"

DEFAULTS: dict[str, Any] = {
    "SIGNALBUS_JOURNAL_SIGNALS": None,
    "SIGNALBUS_JOURNAL_EXCLUDE": (),
    "SIGNALBUS_JOURNAL_FSYNC": False,
}
"""Settings with a default. ``SIGNALBUS_JOURNAL_DIR`` defaults to the app's instance folder."""


def _names(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, Iterable) or not all(isinstance(v, str) and v for v in value):
        raise signalbus.ConfigurationError(
            f"{key} must be a list of signal names (or a comma-separated string), "
            f"not {value!r}."
        )
    return tuple(value)


def journal_dir(config: Mapping[str, Any], app: Any = None) -> str:
    """The journal directory: ``SIGNALBUS_JOURNAL_DIR``, else ``<instance>/signalbus-journal``."""
    directory = config.get("SIGNALBUS_JOURNAL_DIR")
    if directory:
        return str(os.fspath(directory))
    if app is not None:
        return os.path.join(str(app.instance_path), DEFAULT_DIRNAME)
    raise NotConfigured(
        "signalbus-journal needs SIGNALBUS_JOURNAL_DIR, the directory to write the "
        "journal files to (outside Flask there is no instance folder to default to)."
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The journal's settings, read once at set-up."""

    directory: str
    """``SIGNALBUS_JOURNAL_DIR``."""
    signals: tuple[str, ...] | None
    """``SIGNALBUS_JOURNAL_SIGNALS``: the signals to journal; ``None`` for every declared one."""
    exclude: frozenset[str]
    """``SIGNALBUS_JOURNAL_EXCLUDE``: signals never journaled."""
    fsync: bool
    """``SIGNALBUS_JOURNAL_FSYNC``: ``fsync`` after every line."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], app: Any = None) -> Settings:
        """Read and check the settings; errors name the key."""
        chosen = config.get("SIGNALBUS_JOURNAL_SIGNALS")
        return cls(
            directory=journal_dir(config, app),
            signals=_names(chosen, "SIGNALBUS_JOURNAL_SIGNALS") if chosen is not None else None,
            exclude=frozenset(_names(config.get("SIGNALBUS_JOURNAL_EXCLUDE") or (),
                                     "SIGNALBUS_JOURNAL_EXCLUDE")),
            fsync=bool(config.get("SIGNALBUS_JOURNAL_FSYNC")),
        )


def setup(bus: PluginBus) -> None:
    """Entry point of the ``journal`` plugin: connect the journal to the chosen signals.

    Reads ``SIGNALBUS_JOURNAL_DIR`` (default ``<app.instance_path>/signalbus-journal``),
    ``SIGNALBUS_JOURNAL_SIGNALS`` (``None``: every declared signal),
    ``SIGNALBUS_JOURNAL_EXCLUDE`` (``()``) and ``SIGNALBUS_JOURNAL_FSYNC`` (``False``).
    """
    config = bus.config
    if hasattr(config, "setdefault"):
        for key, value in DEFAULTS.items():
            config.setdefault(key, value)
    settings = Settings.from_config(config, bus.app)
    journal = Journal(settings.directory, fsync=settings.fsync)
    if bus.app is not None:
        bus.app.extensions[EXTENSION] = journal
    if settings.signals is None:
        exclude = settings.exclude

        def journal_all(sender: Any, event: Event, **kwargs: Any) -> None:
            if event.signal not in exclude:
                journal(sender, event=event)

        # every committed event of this app, whatever signal it belongs to and whenever
        # that signal was declared (never the uncommitted phase="flush" events)
        bus.connect_all(journal_all, name=RECEIVER_NAME)
        chosen: list[str] = []
    else:
        chosen = [name for name in settings.signals if name not in settings.exclude]
        for name in chosen:
            bus.connect(name, journal, name=RECEIVER_NAME)
    which = "every signal" if settings.signals is None else f"listed signals: {len(chosen)}"
    excluded = f" except {', '.join(sorted(settings.exclude))}" if settings.exclude else ""
    bus.describe(f"journal: {settings.directory} ({which}{excluded})")
