"""The ``plan_subscriptions`` table the plans plugin owns, and the ways to create it.

The table lives in the plugin's own :data:`metadata`, never in the host's models. A host
creates it in one of two ways:

* :func:`include_in` copies it into the host's ``MetaData`` (``db.metadata`` with
  Flask-SQLAlchemy), so ``db.create_all()`` and Alembic autogenerate see it;
* :func:`create_all` creates it on an engine or connection directly (``CREATE TABLE IF
  NOT EXISTS``), e.g. in a deployment script or a test fixture.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeDecorator

__all__ = ["UTCDateTime", "create_all", "include_in", "metadata", "plan_subscriptions"]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no time zone type: values are stored there as naive UTC and given
    ``tzinfo=UTC`` again when read, so comparisons with ``Event.occurred_at`` (aware)
    work on every database.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"plan_subscriptions timestamps must be timezone-aware: {value!r}")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


metadata = MetaData()
"""The plugin's own metadata; holds :data:`plan_subscriptions` only."""

plan_subscriptions = Table(
    "plan_subscriptions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", String(255), nullable=False,
           comment="The user's id as text, so that any key type (int, UUID, str) fits."),
    Column("service", String(255), nullable=False),
    Column("plan", String(255), nullable=False,
           comment="The plan under which the service was last subscribed."),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("event_id", String(64), nullable=False,
           comment="Id of the signalbus event that last changed the row."),
    Column("event_at", UTCDateTime, nullable=False,
           comment="occurred_at of that event: older events never undo newer ones."),
    UniqueConstraint("user_id", "service", name="uq_plan_subscriptions_user_service"),
)
"""One row per (user, service): ``active`` is true while the user's plan includes it.

Cancelled subscriptions stay as inactive rows (history); subscribing again reactivates
the row. ``user_id`` is text: an integer id ``7`` is stored as ``"7"``.
"""


def include_in(target: MetaData) -> Table:
    """Copy :data:`plan_subscriptions` into the host's ``MetaData`` and return the copy.

    With Flask-SQLAlchemy::

        import signalbus_plans
        signalbus_plans.include_in(db.metadata)   # next to the models
        db.create_all()                            # now creates plan_subscriptions too

    Calling it again for the same metadata returns the table already there. The plugin
    keeps querying its own :data:`plan_subscriptions`; both describe the same table.
    """
    existing = target.tables.get(plan_subscriptions.name)
    if existing is not None:
        return existing
    return plan_subscriptions.to_metadata(target)


def create_all(bind: Engine | Connection) -> None:
    """Create the ``plan_subscriptions`` table on ``bind`` if it does not exist yet."""
    metadata.create_all(bind, checkfirst=True)
