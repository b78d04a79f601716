"""Prometheus metrics (the optional extra ``metrics``: ``prometheus_client``).

Switch them on in each process that delivers: the worker does it with
``signalbus worker --metrics-port 9464`` (served on ``--metrics-host``, default
127.0.0.1); a host app in inline mode calls :func:`enable` once and serves
:func:`flask_view` (or ``prometheus_client``'s own exporters)::

    import signalbus.metrics
    signalbus.metrics.enable(engine=db.engine)          # engine: the outbox gauges
    app.add_url_rule("/metrics", view_func=signalbus.metrics.flask_view)

Metrics (labels in brackets):

``signalbus_delivered_total`` [signal, receiver]
    receiver runs that returned.
``signalbus_retried_total`` [signal, receiver]
    failed runs for which another attempt is scheduled (outbox).
``signalbus_dead_total`` [signal, receiver]
    deliveries given up (``Permanent``, too many attempts); inline, every failure.
``signalbus_delivery_duration_seconds`` [signal, receiver]
    how long a receiver ran (histogram).
``signalbus_delivery_lag_seconds`` [signal]
    from the change (``event.occurred_at``, its first flush, just before the commit) to
    the start of its first delivery attempt (histogram; retries are not counted twice).
``signalbus_outbox_pending`` [kind: events, deliveries] and
``signalbus_outbox_oldest_pending_age_seconds``
    gauges read from the outbox at scrape time (with ``engine``): the pending rows
    only, through their partial indexes, so a scrape stays cheap however much is
    settled. 0 when nothing is pending.

Nothing is imported or counted until :func:`enable` is called; ``import signalbus``
never imports ``prometheus_client``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import delivery
from .errors import ConfigurationError
from .outbox.settings import utcnow

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .events import Event
    from .signals import Receiver

__all__ = ["Metrics", "enable", "flask_view", "serve"]

_lock = threading.Lock()
_enabled: Metrics | None = None

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
               3600.0)


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigurationError(
            "signalbus metrics need prometheus_client: pip install "
            "'sqlalchemy-signalbus[metrics]'."
        ) from None
    return prometheus_client


class Metrics:
    """The collectors, registered in ``registry`` (default: ``prometheus_client``'s
    global registry), and the :class:`~signalbus.delivery.Instrument` that feeds them."""

    def __init__(self, registry: Any = None) -> None:
        pc = _client()
        self.registry = registry if registry is not None else pc.REGISTRY
        labels = ("signal", "receiver")
        kw: dict[str, Any] = {"registry": self.registry}
        self.delivered = pc.Counter("signalbus_delivered", "Receiver runs that returned.",
                                    labels, **kw)
        self.retried = pc.Counter("signalbus_retried",
                                  "Failed deliveries scheduled for another attempt.", labels,
                                  **kw)
        self.dead = pc.Counter("signalbus_dead", "Deliveries given up.", labels, **kw)
        self.duration = pc.Histogram("signalbus_delivery_duration_seconds",
                                     "How long a receiver ran.", labels,
                                     buckets=DURATION_BUCKETS, **kw)
        self.lag = pc.Histogram("signalbus_delivery_lag_seconds",
                                "From the change to the start of its first delivery.",
                                ("signal",), buckets=LAG_BUCKETS, **kw)
        self.engine: Engine | None = None
        self._collector: _OutboxCollector | None = None

    def watch(self, engine: Engine) -> None:
        """Report the outbox gauges of ``engine`` at every scrape."""
        self.engine = engine
        if self._collector is None:
            self._collector = _OutboxCollector(self)
            self.registry.register(self._collector)

    # the Instrument protocol ----------------------------------------------------------------

    @contextlib.contextmanager
    def run(self, receiver: Receiver, sender: Any, event: Event
            ) -> Iterator[Callable[[delivery.Outcome], None]]:
        if event.attempt == 1:
            lag = (utcnow() - event.occurred_at).total_seconds()
            self.lag.labels(event.signal).observe(max(0.0, lag))
        started = time.perf_counter()

        def finish(outcome: delivery.Outcome) -> None:
            self.duration.labels(event.signal, receiver.name).observe(
                time.perf_counter() - started)

        yield finish

    def settled(self, signal: str, receiver: str, result: str) -> None:
        counter = {"delivered": self.delivered, "retried": self.retried,
                   "dead": self.dead}.get(result)
        if counter is not None:
            counter.labels(signal, receiver).inc()


class _OutboxCollector:
    """The outbox gauges, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from .outbox import browse

        engine = self.metrics.engine
        if engine is None:
            return
        try:
            found = browse.lag(engine)
        except Exception:  # the database is down: report what we can, and say so
            up = GaugeMetricFamily("signalbus_outbox_up",
                                   "Whether the last scrape could read the outbox.")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("signalbus_outbox_up",
                               "Whether the last scrape could read the outbox.")
        up.add_metric([], 1)
        yield up
        pending = GaugeMetricFamily("signalbus_outbox_pending",
                                    "Pending events and deliveries in the outbox.",
                                    labels=["kind"])
        pending.add_metric(["events"], found["pending_events"])
        pending.add_metric(["deliveries"], found["pending_deliveries"])
        yield pending
        oldest = GaugeMetricFamily("signalbus_outbox_oldest_pending_age_seconds",
                                   "Age of the oldest pending event or delivery (0: none).")
        oldest.add_metric([], found["oldest_pending_age_seconds"] or 0.0)
        yield oldest


def enable(*, engine: Engine | None = None, registry: Any = None) -> Metrics:
    """Count every delivery made in this process from now on (once per process: a
    second call returns the same :class:`Metrics`, watching ``engine`` if given)."""
    global _enabled
    with _lock:
        if _enabled is None:
            _enabled = Metrics(registry)
            delivery.instruments.append(_enabled)
        if engine is not None:
            _enabled.watch(engine)
        return _enabled


def serve(port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` of the enabled metrics on ``host:port`` in a thread (what
    ``signalbus worker --metrics-port`` does); the server."""
    metrics = enable()
    server, _thread = _client().start_http_server(port, addr=host, registry=metrics.registry)
    return server


def flask_view() -> Any:
    """A Flask view serving the enabled metrics in Prometheus' text format."""
    from flask import Response

    pc = _client()
    metrics = enable()
    return Response(pc.generate_latest(metrics.registry), mimetype=pc.CONTENT_TYPE_LATEST)
