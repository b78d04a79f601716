"""OpenTelemetry tracing (the optional extra ``tracing``: ``opentelemetry-api``).

::

    import signalbus.tracing
    signalbus.tracing.enable()          # in the host app and in the worker process

Once enabled in a process:

* **At commit** (outbox and Celery delivery), the trace context current in the
  committing thread — the request's span, under the usual Flask/SQLAlchemy
  instrumentation — is stored with each event, as W3C ``traceparent``/``tracestate``
  under the payload key ``"trace"``.
* **Each receiver run** is a span ``signalbus deliver <signal>`` (kind ``CONSUMER``)
  with the attributes ``messaging.system`` (``signalbus``),
  ``messaging.destination.name`` (the signal), ``signalbus.receiver``,
  ``signalbus.event_id`` and ``signalbus.attempt``. Inline, it is a child of the span
  current at commit (the request). In a worker, it is a child of the stored context,
  with a link to it as well, so the trace shows request → commit → welcome mail even
  when the mail is sent minutes later by another process. Events stored without a
  context (tracing off at commit) get a span of their own.
* A failed run sets the span's status to ``ERROR`` with the error redacted
  (:func:`signalbus.redaction.describe_error`); the exception itself is not recorded
  on the span, because its message may hold a secret.

Spans go to the global tracer provider, or to ``tracer_provider`` given to
:func:`enable`. Nothing is imported until :func:`enable` is called.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import delivery
from .errors import ConfigurationError
from .redaction import describe_error

if TYPE_CHECKING:
    from .events import Event
    from .signals import Receiver

__all__ = ["Tracing", "enable"]

_lock = threading.Lock()
_enabled: Tracing | None = None

PAYLOAD_KEY = "trace"
"""Where the trace context is stored in an outbox payload."""


def _api() -> tuple[Any, Any]:
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        raise ConfigurationError(
            "signalbus tracing needs OpenTelemetry: pip install "
            "'sqlalchemy-signalbus[tracing]'."
        ) from None
    return trace, propagate


class Tracing:
    """The :class:`~signalbus.delivery.Instrument` making a span per receiver run, and
    the outbox stamp storing the committing trace context."""

    def __init__(self, tracer_provider: Any = None) -> None:
        from opentelemetry.trace.propagation.tracecontext import (
            TraceContextTextMapPropagator,
        )

        trace, _propagate = _api()
        self.trace = trace
        self.tracer = trace.get_tracer("signalbus", tracer_provider=tracer_provider)
        # W3C trace context whatever the app's global propagator: the stored form is ours
        self.propagator = TraceContextTextMapPropagator()
        self._stored = threading.local()

    # at commit ------------------------------------------------------------------------------

    def stamp(self, payload: dict[str, Any]) -> None:
        """Store the current trace context in an outbox payload (if there is one)."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        if carrier.get("traceparent"):
            payload[PAYLOAD_KEY] = carrier

    # in the worker ------------------------------------------------------------------------

    def loaded(self, event: Event, payload: Any) -> None:
        carrier = payload.get(PAYLOAD_KEY) if isinstance(payload, dict) else None
        self._stored.value = (event.id, carrier if isinstance(carrier, dict) else None)

    # the Instrument protocol ----------------------------------------------------------------

    @contextlib.contextmanager
    def run(self, receiver: Receiver, sender: Any, event: Event
            ) -> Iterator[Callable[[delivery.Outcome], None]]:
        trace = self.trace
        stored = getattr(self._stored, "value", None)
        context: Any = None
        links: list[Any] = []
        if stored is not None and stored[0] == event.id:  # a worker: the stored context
            if stored[1]:
                context = self.propagator.extract(
                    {str(k): str(v) for k, v in stored[1].items()})
                parent = trace.get_current_span(context).get_span_context()
                if parent.is_valid:
                    links.append(trace.Link(parent))
            else:
                context = trace.set_span_in_context(trace.INVALID_SPAN)  # a root span
        attributes = {
            "messaging.system": "signalbus",
            "messaging.destination.name": event.signal,
            "messaging.operation": "process",
            "signalbus.receiver": receiver.name,
            "signalbus.event_id": event.id,
            "signalbus.attempt": event.attempt,
        }
        with self.tracer.start_as_current_span(
                f"signalbus deliver {event.signal}", context=context,
                kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes,
                record_exception=False, set_status_on_exception=False) as span:

            def finish(outcome: delivery.Outcome) -> None:
                span.set_attribute("signalbus.outcome", outcome.kind)
                if outcome.error is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR,
                                                 describe_error(outcome.error, 500)))

            yield finish

    def settled(self, signal: str, receiver: str, result: str) -> None:
        pass


def enable(*, tracer_provider: Any = None) -> Tracing:
    """Trace every receiver run in this process, and store the committing trace
    context with outbox events (once per process: a second call returns the same
    :class:`Tracing`)."""
    from .outbox import store

    global _enabled
    with _lock:
        if _enabled is None:
            _enabled = Tracing(tracer_provider)
            delivery.instruments.append(_enabled)
            store.stamps.append(_enabled.stamp)
        return _enabled


def disable() -> None:
    """Stop tracing in this process (tests)."""
    from .outbox import store

    global _enabled
    with _lock:
        if _enabled is not None:
            delivery.instruments.remove(_enabled)
            store.stamps.remove(_enabled.stamp)
            _enabled = None
