"""The event a log line is about, as structured data.

Every record of the ``signalbus`` logger carries three attributes — ``event_id``,
``signal`` and ``receiver`` — set when the line is about an event (``None``
otherwise), so a JSON formatter or a log pipeline can index them, and a plain
formatter can print them::

    logging.basicConfig(format="%(levelname)s %(event_id)s %(message)s")

While a receiver runs (inline or in a worker), :data:`current` holds a
:class:`Running` record of its event and receiver: add :class:`EventFilter` to a handler
and the lines a receiver or a plugin logs on *any* logger carry the same attributes::

    handler.addFilter(signalbus.logs.EventFilter())

A log call may also name them itself: ``extra={"event_id": ..., "signal": ...,
"receiver": ...}``.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

__all__ = ["EventFilter", "Running", "current"]


class Running:
    """The event and receiver being run, updated in place as delivery moves on.

    Delivery sets :data:`current` once per run of many receivers (an inline delivery
    after a commit, one worker run) and updates this record before each receiver, which
    costs two attribute stores instead of a context variable set and reset per receiver.
    ``event`` is ``None`` between receivers.
    """

    __slots__ = ("event", "receiver")

    def __init__(self) -> None:
        self.event: Any = None
        """The :class:`~signalbus.Event` whose receiver is running, or ``None``."""
        self.receiver: Any = None
        """The receiver (with its durable ``name``) running, or ``None``."""

    def fields(self) -> tuple[str | None, str | None, str | None]:
        """``(event id, signal, receiver name)``, all ``None`` when nothing runs."""
        event = self.event
        if event is None:
            return (None, None, None)
        return (event.id, event.signal, self.receiver.name)


current: ContextVar[Running | None] = ContextVar("signalbus_event", default=None)
"""The :class:`Running` record of the delivery going on in this thread or task."""

_FIELDS = ("event_id", "signal", "receiver")
_NONE = (None, None, None)


class EventFilter(logging.Filter):
    """Sets ``event_id``, ``signal`` and ``receiver`` on every record: from the log
    call's ``extra``, else from :data:`current`, else ``None``."""

    def filter(self, record: logging.LogRecord) -> bool:
        running = current.get()
        values = running.fields() if running is not None else _NONE
        for name, value in zip(_FIELDS, values, strict=True):
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


_LOGGER = logging.getLogger("signalbus")
if not any(isinstance(f, EventFilter) for f in _LOGGER.filters):
    _LOGGER.addFilter(EventFilter())
