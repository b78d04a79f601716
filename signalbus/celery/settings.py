"""Celery mode's settings (``SIGNALBUS_CELERY_*``), read without importing Celery.

``SIGNALBUS_CELERY_BROKER`` (none)
    the broker URL of the Celery app signalbus makes (:func:`signalbus.celery.init_celery`
    without a Celery instance); when unset, the ``broker_url`` of the app's ``CELERY``
    config (Flask's documented Celery setup) is used.
``SIGNALBUS_CELERY_QUEUE`` (``"signalbus"``)
    the queue the relay sends delivery tasks to; Celery workers must consume it
    (``celery worker -Q signalbus``, or the host's routing).
``SIGNALBUS_CELERY_LEASE`` (600 s)
    how long a delivery handed over to Celery may stay unreported (waiting in the queue,
    then running) before the relay hands it over again. Keep it above the longest queue
    wait plus the slowest receiver: a lease that lapses while the first task still
    waits makes a second one, which finds the delivery taken and does nothing, but a
    lease shorter than a receiver's run can run it twice.
``SIGNALBUS_CELERY_MAX_HANDED_OVER`` (1000)
    the most deliveries handed over and not yet reported at any time: the relay hands
    over no more while the queue holds that many, so that a backlog waits in the outbox
    (where ``status`` shows it and no lease runs) rather than in the broker.
``SIGNALBUS_CELERY_CONNECT_RETRIES`` (5)
    how often a task whose database connection fails is retried by Celery (with
    exponential backoff) before the relay's lease takes over.

The outbox's own settings apply too: ``SIGNALBUS_OUTBOX_BATCH`` (deliveries handed over
per round), ``…_POLL``, ``…_BACKOFF_*``, ``…_MAX_ATTEMPTS``, ``…_NOTIFY``,
``…_CHANNEL``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError

__all__ = ["CelerySettings", "TASK_NAME"]

TASK_NAME = "signalbus.deliver"
"""The name of signalbus's delivery task (for routing it in the host's Celery config)."""


@dataclasses.dataclass(frozen=True)
class CelerySettings:
    """The ``SIGNALBUS_CELERY_*`` settings of one app (see the module docstring)."""

    broker: str | None = None
    queue: str = "signalbus"
    lease: float = 600.0
    max_handed_over: int = 1000
    connect_retries: int = 5

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CelerySettings:
        """Read and check the ``SIGNALBUS_CELERY_*`` keys."""
        broker = config.get("SIGNALBUS_CELERY_BROKER")
        if broker is None:
            celery_config = config.get("CELERY")
            if isinstance(celery_config, Mapping):
                broker = celery_config.get("broker_url")
        queue = str(config.get("SIGNALBUS_CELERY_QUEUE", cls.queue))
        if not queue.strip():
            raise ConfigurationError("SIGNALBUS_CELERY_QUEUE is empty; name the queue the "
                                     "Celery workers consume, e.g. 'signalbus'.")
        raw_lease = config.get("SIGNALBUS_CELERY_LEASE", cls.lease)
        try:
            lease = float(raw_lease)
        except (TypeError, ValueError):
            lease = math.nan
        if not math.isfinite(lease) or lease < 0.1:
            raise ConfigurationError(f"SIGNALBUS_CELERY_LEASE is {raw_lease!r}; it must be a "
                                     "number of seconds, at least 0.1.")
        raw_retries = config.get("SIGNALBUS_CELERY_CONNECT_RETRIES", cls.connect_retries)
        try:
            retries = int(raw_retries)
        except (TypeError, ValueError):
            retries = -1
        if retries < 0:
            raise ConfigurationError(f"SIGNALBUS_CELERY_CONNECT_RETRIES is {raw_retries!r}; "
                                     "it must be a whole number, 0 or more.")
        raw_max = config.get("SIGNALBUS_CELERY_MAX_HANDED_OVER", cls.max_handed_over)
        try:
            most = int(raw_max)
        except (TypeError, ValueError):
            most = 0
        if most < 1:
            raise ConfigurationError(f"SIGNALBUS_CELERY_MAX_HANDED_OVER is {raw_max!r}; it "
                                     "must be a whole number, at least 1.")
        return cls(broker=str(broker) if broker else None, queue=queue, lease=lease,
                   max_handed_over=most, connect_retries=retries)
