"""What ``celery -A examples.demo_celery:celery worker`` loads for ``make demo
DELIVERY=celery``: the demo app named by ``SIGNALBUS_DEMO_APP`` (``badgeyay`` or
``yvih``), with signalbus's Celery app (Flask's ``FlaskTask`` pattern)."""

from __future__ import annotations

import os

import signalbus.celery
from examples import demo

celery = signalbus.celery.init_celery(
    {"badgeyay": demo.badgeyay_worker, "yvih": demo.yvih_worker}[os.environ["SIGNALBUS_DEMO_APP"]]()
)
