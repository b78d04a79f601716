"""``SIGNALBUS_DELIVERY = "celery"``: the outbox, delivered by Celery workers.

The event is written in the committing transaction exactly as in outbox mode. A relay
(``flask signalbus relay``) hands each committed (event, receiver) delivery over to
Celery as a task **after** the commit, records that it did, and hands over again what
was never reported done after ``SIGNALBUS_CELERY_LEASE``. The task
(``signalbus.deliver``) runs the receiver by its durable name inside the Flask app
context and records the outcome in the outbox.

Set it up where the app is made::

    app.config["SIGNALBUS_DELIVERY"] = "celery"
    app.config["SIGNALBUS_CELERY_BROKER"] = "redis://localhost:6379/0"
    signalbus.init_app(app, db=db)
    celery_app = signalbus.celery.init_celery(app)    # a Celery app of its own

or, in an app that already has a Celery instance (Flask's ``celery_init_app``)::

    celery_app = celery_init_app(app)
    signalbus.celery.init_celery(app, celery=celery_app)  # registers signalbus.deliver

then run ``celery -A myapp.celery_app worker -Q signalbus`` and ``flask signalbus relay``.

Importing :mod:`signalbus` (or this package) does not import Celery: only
:func:`init_celery` does.
"""

from __future__ import annotations

from typing import Any

from .relay import Relay, RelayStats
from .settings import TASK_NAME, CelerySettings

__all__ = ["TASK_NAME", "CelerySettings", "Relay", "RelayStats", "init_celery"]


def init_celery(target: Any = None, celery: Any = None) -> Any:
    """Give the app's signalbus a Celery app to deliver through; the Celery app.

    ``target`` is a Flask app, a :class:`~signalbus.SignalBus` or its runtime (``None``:
    the default bus), set up with ``SIGNALBUS_DELIVERY = "celery"``. Without ``celery``,
    a Celery app is made from ``SIGNALBUS_CELERY_BROKER`` (or the ``CELERY`` config's
    ``broker_url``; the rest of ``CELERY`` is applied too) with Flask's ``FlaskTask``
    as its task class, and stored in ``app.extensions["celery"]`` unless one is there.
    With ``celery``, signalbus's task is registered on that app. Either way the task
    ``signalbus.deliver`` pushes the Flask app context, acknowledges late, is requeued
    when its worker process dies and retries database connection errors with backoff.
    One Celery app delivers for one signalbus app.
    """
    from ..outbox.worker import runtime_of
    from .app import init_celery as _init

    return _init(runtime_of(target), celery)
