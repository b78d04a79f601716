"""The event a log line is about, as structured data.

Every record of the ``signalbus`` logger carries three attributes — ``event_id``,
``signal`` and ``receiver`` — set when the line is about an event (``None``
otherwise), so a JSON formatter or a log pipeline can index them, and a plain
formatter can print them::

    logging.basicConfig(format="%(levelname)s %(event_id)s %(message)s")

While a receiver runs (inline or in a worker), :data:`current` holds its event: add
:class:`EventFilter` to a handler and the lines a receiver or a plugin logs on *any*
logger carry the same attributes::

    handler.addFilter(signalbus.logs.EventFilter())

A log call may also name them itself: ``extra={"event_id": ..., "signal": ...,
"receiver": ...}``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

__all__ = ["EventFilter", "current"]

current: ContextVar[tuple[str, str, str] | None] = ContextVar("signalbus_event", default=None)
"""``(event id, signal, receiver)`` of the receiver running in this thread or task."""

_FIELDS = ("event_id", "signal", "receiver")


class EventFilter(logging.Filter):
    """Sets ``event_id``, ``signal`` and ``receiver`` on every record: from the log
    call's ``extra``, else from :data:`current`, else ``None``."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current.get()
        for i, name in enumerate(_FIELDS):
            if getattr(record, name, None) is None:
                setattr(record, name, running[i] if running is not None else None)
        return True


_LOGGER = logging.getLogger("signalbus")
if not any(isinstance(f, EventFilter) for f in _LOGGER.filters):
    _LOGGER.addFilter(EventFilter())
