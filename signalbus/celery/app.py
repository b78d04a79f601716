"""The Celery side: a configured Celery app, or signalbus's task on the host's own.

Imports Celery; reached only through :func:`signalbus.celery.init_celery`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from sqlalchemy import exc as sa_exc

from ..errors import ConfigurationError
from .relay import backend_of
from .settings import TASK_NAME
from .task import deliver

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["DeliveryTask", "flask_task_class", "init_celery"]

_RUNTIME_ATTR = "signalbus_runtime"


def flask_task_class(app: Any) -> type[Task]:
    """Flask's documented ``FlaskTask``: every task of the Celery app runs inside ``app``'s
    application context."""

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    return FlaskTask


class DeliveryTask(Task):  # type: ignore[misc]
    """signalbus's delivery task: late acknowledgement (the message is acknowledged
    after the run, so a worker that dies mid-task leaves it to another), rejected and
    requeued when its worker process is lost, retried with exponential backoff when
    the database connection fails. Pushes the Flask app context of the runtime it
    delivers for, whatever the Celery app's own task class (the ``FlaskTask`` pattern,
    also on a host's Celery that does not use it)."""

    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = (sa_exc.OperationalError, sa_exc.InterfaceError)
    retry_backoff = True
    retry_backoff_max = 60
    retry_jitter = True

    def __call__(self, *args: object, **kwargs: object) -> object:
        runtime = runtime_of_celery(self.app)
        context = runtime.app.app_context() if runtime.app is not None \
            else contextlib.nullcontext()
        with context:
            return self.run(*args, **kwargs)


def runtime_of_celery(celery: Any) -> Runtime:
    """The signalbus runtime a Celery app delivers for (set by :func:`init_celery`)."""
    runtime: Runtime | None = getattr(celery, _RUNTIME_ATTR, None)
    if runtime is None:
        raise ConfigurationError(
            f"Celery app {celery.main!r} runs {TASK_NAME} but signalbus was never set up on "
            "it: call signalbus.celery.init_celery(flask_app, celery=this_celery_app) in the "
            "module the worker imports (celery -A …)."
        )
    return runtime


def _deliver(self: Task, delivery_id: int, token: str, attempt: int) -> str:
    return deliver(self, runtime_of_celery(self.app), delivery_id, token, attempt)


def init_celery(runtime: Runtime, celery: Any = None) -> Any:
    """See :func:`signalbus.celery.init_celery`."""
    backend = backend_of(runtime)
    settings = backend.celery_settings
    if celery is None:
        if settings.broker is None:
            raise ConfigurationError(
                "signalbus has no Celery broker: set SIGNALBUS_CELERY_BROKER (e.g. "
                "'redis://localhost:6379/0'), or CELERY = {'broker_url': ...} in the app "
                "config, or pass your Celery app: init_celery(app, celery=celery_app)."
            )
        flask_app = runtime.app
        name = flask_app.name if flask_app is not None else "signalbus"
        if flask_app is not None:
            celery = Celery(name, task_cls=flask_task_class(flask_app))
            celery_config = flask_app.config.get("CELERY")
            if isinstance(celery_config, Mapping):
                celery.config_from_object(dict(celery_config))
        else:
            celery = Celery(name)
        celery.conf.broker_url = settings.broker
        celery.conf.setdefault("broker_connection_retry_on_startup", True)
        celery.conf.setdefault("task_default_queue", settings.queue)
        if flask_app is not None:
            flask_app.extensions.setdefault("celery", celery)
    celery.conf.setdefault("worker_prefetch_multiplier", 1)
    setattr(celery, _RUNTIME_ATTR, runtime)
    celery.task(name=TASK_NAME, bind=True, base=DeliveryTask,
                max_retries=settings.connect_retries)(_deliver)
    backend.celery = celery
    return celery
