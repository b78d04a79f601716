"""``SIGNALBUS_DELIVERY = "celery"``: the outbox's write at commit, delivered through Celery.

The commit writes exactly what outbox mode writes (:class:`~signalbus.outbox.Outbox`):
the event rows, in the transaction, and the ``NOTIFY``. Nothing is sent to Celery from
the committing process, so nothing is ever enqueued from inside a transaction and a
rollback enqueues nothing: the relay (:mod:`signalbus.celery.relay`) hands committed
deliveries over afterwards. Importing this module does not import Celery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..outbox.store import Outbox
from .settings import CelerySettings

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["CeleryOutbox"]


class CeleryOutbox(Outbox):
    """The ``"celery"`` delivery backend: the outbox, plus the Celery app of this runtime."""

    name = "celery"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.celery_settings = CelerySettings.from_config(runtime.config)
        self.celery: Any = None
        """The Celery app tasks are sent with (set by :func:`signalbus.celery.init_celery`)."""
