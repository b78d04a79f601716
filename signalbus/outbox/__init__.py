"""The outbox: committed events stored in the transaction that made them, delivered by
a worker. ``SIGNALBUS_DELIVERY = "outbox"`` selects it.

The package follows the flow:

* :mod:`~signalbus.outbox.schema` — the tables, their states, the schema version;
* :mod:`~signalbus.outbox.store` — the write at commit (:class:`Outbox`);
* :mod:`~signalbus.outbox.sql` — every SQL statement, one function each;
* :mod:`~signalbus.outbox.worker` — the worker loop (:class:`~signalbus.outbox.worker.Worker`);
* :mod:`~signalbus.outbox.listen` — the LISTEN connection;
* :mod:`~signalbus.outbox.retry` — the retry policy;
* :mod:`~signalbus.outbox.admin` — status, retry, replay, purge, returning data;
* :mod:`~signalbus.outbox.settings` — ``SIGNALBUS_OUTBOX_*`` and the engine it lives on.

Create the tables with :func:`create_all`, or let Alembic see them::

    # env.py
    import signalbus.outbox
    target_metadata = [db.metadata, signalbus.outbox.metadata]

(and call ``signalbus.outbox.stamp(op.get_bind())`` in the migration that creates them),
or copy them into the app's metadata with :func:`include_in`. They must be in the same
database as the rows whose events they store. The worker and the commands need neither
Flask nor click to be imported: ``from signalbus.outbox.worker import Worker``.
"""

from __future__ import annotations

from .schema import (
    DEAD,
    DELIVERED,
    DONE,
    PENDING,
    SCHEMA_VERSION,
    SchemaMismatch,
    check,
    create_all,
    deliveries,
    drop_all,
    include_in,
    metadata,
    outbox,
    schema_version,
    stamp,
)
from .settings import OutboxSettings, aware, engine_of, utcnow
from .store import Outbox, row_key

__all__ = [
    "DEAD",
    "DELIVERED",
    "DONE",
    "PENDING",
    "SCHEMA_VERSION",
    "Outbox",
    "OutboxSettings",
    "SchemaMismatch",
    "aware",
    "check",
    "create_all",
    "deliveries",
    "drop_all",
    "engine_of",
    "include_in",
    "metadata",
    "outbox",
    "row_key",
    "schema_version",
    "stamp",
    "utcnow",
]
