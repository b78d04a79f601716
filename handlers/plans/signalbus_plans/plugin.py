"""The ``plans`` entry point: settings, receivers and the subscription writes.

How a delivery is written: the receiver opens a session of the bus's session factory
(Flask-SQLAlchemy's ``db.session`` when the host called ``init_app(app, db=db)``; see
:meth:`Plans.session` for why a new one rather than the scoped one), reads
the user's rows, works out the difference between the services the user should have and
the active ones, writes it, and emits ``plan_subscribed`` / ``plan_cancelled`` with
``signalbus.emit(..., session=session)`` before committing. The emitted events therefore
belong to the plugin's own transaction: they are delivered if and only if its write
commits (inline delivery runs them after the events already being delivered).

Idempotency: the writes are state-based, not "apply a delta". A redelivered event finds
the rows already as it wants them and changes nothing (and emits nothing). Each row also
keeps the ``occurred_at`` of the event that last changed it, and an event older than
that leaves the row alone, so an old event redelivered late (outbox retries) never
undoes a newer plan change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, scoped_session

import signalbus
from signalbus.errors import NotConfigured
from signalbus.plugins import PluginBus
from signalbus.signals import is_declared

from .table import plan_subscriptions as t

__all__ = ["SIGNALS", "Change", "Plans", "Settings", "Wanted", "setup"]

EXTENSION = "signalbus_plans"
"""Key of the per-app :class:`Plans` in ``app.extensions``."""

SIGNALS = ("user_registered", "user_plan_changed", "user_deleted")
"""The host's signals the plugin listens to."""

DEFAULTS: dict[str, Any] = {
    "SIGNALBUS_PLANS_FIELD": "plan",
    "SIGNALBUS_PLANS_USER_ID_FIELD": "id",
    "SIGNALBUS_PLANS_DEFAULT": None,
}
"""Settings with a default. ``SIGNALBUS_PLANS`` has none: it must be set."""

plan_subscribed = signalbus.signal(
    "plan_subscribed",
    doc="A user was subscribed to a service of their plan. data: user_id, service, plan, "
    "cause (the signal that caused it), cause_id (that event's id).",
)
plan_cancelled = signalbus.signal(
    "plan_cancelled",
    doc="A user's subscription to a service was cancelled. data: user_id, service, plan "
    "(the plan it had been subscribed under), cause, cause_id.",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The plugin's settings, read once from the app config at ``init_app``."""

    plans: Mapping[str, tuple[str, ...]]
    """``SIGNALBUS_PLANS``: plan name -> the services it includes."""
    field: str
    """``SIGNALBUS_PLANS_FIELD``: the ``event.data`` field holding the plan name."""
    user_id_field: str
    """``SIGNALBUS_PLANS_USER_ID_FIELD``: the ``event.data`` field holding the user id."""
    default: str | None
    """``SIGNALBUS_PLANS_DEFAULT``: the plan of a user whose plan field is empty, or
    missing from the event (a user model without a plan column)."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read and check the settings; :class:`signalbus.ConfigurationError` names the key."""
        raw = config.get("SIGNALBUS_PLANS")
        if raw is None:
            # installed but not set up in this app (a script, another service): skipped
            raise NotConfigured(
                "signalbus-plans needs SIGNALBUS_PLANS, a mapping of plan name to the list "
                "of services it includes, e.g. {'free': ['newsletter'], 'pro': "
                "['newsletter', 'priority-support']}. Set it in the app config, or add "
                "'plans' to SIGNALBUS_DISABLED_PLUGINS."
            )
        if not isinstance(raw, Mapping):
            raise signalbus.ConfigurationError(
                f"SIGNALBUS_PLANS must be a mapping of plan name to a list of services, "
                f"not {type(raw).__name__}."
            )
        plans: dict[str, tuple[str, ...]] = {}
        for name, services in raw.items():
            if not isinstance(name, str) or not name:
                raise signalbus.ConfigurationError(
                    f"SIGNALBUS_PLANS: plan names must be non-empty strings, not {name!r}."
                )
            if isinstance(services, str) or not all(
                isinstance(s, str) and s for s in services
            ):
                raise signalbus.ConfigurationError(
                    f"SIGNALBUS_PLANS[{name!r}] must be a list of service names (non-empty "
                    f"strings), not {services!r}."
                )
            plans[name] = tuple(dict.fromkeys(services))

        def text(key: str) -> str:
            value = config.get(key, DEFAULTS[key])
            if not isinstance(value, str) or not value:
                raise signalbus.ConfigurationError(
                    f"{key} must be the name of a field of the user events, not {value!r}."
                )
            return value

        default = config.get("SIGNALBUS_PLANS_DEFAULT", DEFAULTS["SIGNALBUS_PLANS_DEFAULT"])
        if default is not None and default not in plans:
            raise signalbus.ConfigurationError(
                f"SIGNALBUS_PLANS_DEFAULT is {default!r}, which is not a plan of "
                f"SIGNALBUS_PLANS (known plans: {_names(plans)})."
            )
        return cls(
            plans=plans,
            field=text("SIGNALBUS_PLANS_FIELD"),
            user_id_field=text("SIGNALBUS_PLANS_USER_ID_FIELD"),
            default=default,
        )


def _names(plans: Mapping[str, Any]) -> str:
    return ", ".join(repr(p) for p in plans) or "none"


@dataclasses.dataclass(frozen=True)
class Change:
    """What one delivery changed: services subscribed and cancelled (with their plan)."""

    subscribed: tuple[str, ...] = ()
    cancelled: tuple[tuple[str, str], ...] = ()


class Wanted(NamedTuple):
    """The state a delivery brings a user's subscriptions to."""

    user_id: Any
    plan: str | None
    services: frozenset[str]


class Plans:
    """One app's plans plugin: its settings, its session factory and its receivers."""

    def __init__(self, settings: Settings, session_factory: Callable[[], Session]) -> None:
        self.settings = settings
        self.session_factory = session_factory

    # receivers -------------------------------------------------------------------------

    def on_user_registered(self, sender: Any, event: signalbus.Event, **kwargs: Any) -> None:
        """``user_registered``: subscribe the user to the services of their plan."""
        self.apply(event, self.services_for(event))

    def on_user_plan_changed(self, sender: Any, event: signalbus.Event, **kwargs: Any) -> None:
        """``user_plan_changed``: subscribe the added services, cancel the dropped ones."""
        self.apply(event, self.services_for(event))

    def on_user_deleted(self, sender: Any, event: signalbus.Event, **kwargs: Any) -> None:
        """``user_deleted``: cancel every active subscription of the user."""
        self.apply(event, None)

    # logic -----------------------------------------------------------------------------

    def plan_of(self, event: signalbus.Event) -> str | None:
        """The plan named by ``event`` (or the default plan when the field is empty)."""
        s = self.settings
        if s.field not in event.data:
            if s.default is not None:
                return s.default  # a model without a plan column: everyone's plan
            raise signalbus.Permanent(
                f"signalbus-plans: {event.signal!r} event {event.id} has no field "
                f"{s.field!r} (SIGNALBUS_PLANS_FIELD) in its data; include it in the "
                "binding's fields=."
            )
        plan = event.data[s.field]
        if plan is None or plan == "":
            return s.default
        if plan not in s.plans:
            raise signalbus.Permanent(
                f"signalbus-plans: unknown plan {plan!r} in {event.signal!r} event "
                f"{event.id} (user {self.user_id(event)!r}); known plans: "
                f"{_names(s.plans)}. Add it to SIGNALBUS_PLANS or correct the user's "
                f"{s.field!r}."
            )
        return str(plan)

    def services_for(self, event: signalbus.Event) -> Wanted:
        """The user, plan and services that ``event`` says the user should have."""
        plan = self.plan_of(event)
        services = frozenset(self.settings.plans[plan]) if plan is not None else frozenset()
        return Wanted(self.user_id(event), plan, services)

    def user_id(self, event: signalbus.Event) -> Any:
        """The user id of ``event`` (the field ``SIGNALBUS_PLANS_USER_ID_FIELD``)."""
        field = self.settings.user_id_field
        value = event.data.get(field)
        if value is None:
            raise signalbus.Permanent(
                f"signalbus-plans: {event.signal!r} event {event.id} has no user id in "
                f"field {field!r} (SIGNALBUS_PLANS_USER_ID_FIELD); include it in the "
                "binding's fields=."
            )
        return value

    def apply(self, event: signalbus.Event, wanted: Wanted | None) -> Change:
        """Bring the user's rows to ``wanted`` in one transaction and emit what changed.

        ``wanted`` ``None`` cancels everything. Unknown plans have already raised
        :class:`signalbus.Permanent` (in :meth:`plan_of`), before anything is written.
        """
        if wanted is None:
            wanted = Wanted(self.user_id(event), None, frozenset())
        user, plan, services = wanted
        with self.session() as session:
            try:
                change = _write(session, str(user), plan, services, event)
                for service in change.subscribed:
                    signalbus.emit(plan_subscribed, {
                        "user_id": user, "service": service, "plan": plan,
                        "cause": event.signal, "cause_id": event.id,
                    }, session=session)
                for service, old_plan in change.cancelled:
                    signalbus.emit(plan_cancelled, {
                        "user_id": user, "service": service, "plan": old_plan,
                        "cause": event.signal, "cause_id": event.id,
                    }, session=session)
                session.commit()
            except IntegrityError as exc:
                session.rollback()
                # another delivery inserted the same (user, service) between our read
                # and our insert, on a database without INSERT ... ON CONFLICT
                raise signalbus.Retry(
                    message=f"signalbus-plans: concurrent change of user {user!r}'s "
                    f"subscriptions ({exc.orig}); try again"
                ) from None
            except BaseException:
                session.rollback()
                raise
        return change

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A new session of the host's session factory, for one write; closed afterwards.

        With Flask-SQLAlchemy the bus's factory is the scoped ``db.session``; the plugin
        does not write through that very session but through a new one made by its
        ``session_factory`` (same engine, binds and signalbus wiring). The host's scoped
        session cannot be used when the host committed with ``with db.session.begin():``:
        inline receivers run inside that block's exit, and SQLAlchemy refuses any further
        work on the session until the block is left ("Can't operate on closed
        transaction inside context manager"). A session of its own also never commits
        the host's unfinished work, nor expires or rolls back the host's objects.
        """
        factory = self.session_factory
        own = factory.session_factory() if isinstance(factory, scoped_session) else factory()
        try:
            yield own
        finally:
            own.close()


def _write(session: Session, user: str, plan: str | None, services: frozenset[str],
           event: signalbus.Event) -> Change:
    now = dt.datetime.now(dt.UTC)
    at = event.occurred_at
    rows = session.execute(
        select(t.c.id, t.c.service, t.c.plan, t.c.active, t.c.event_at)
        .where(t.c.user_id == user)
        .order_by(t.c.id)
        .with_for_update()  # PostgreSQL: serialise deliveries for one user
    ).all()
    existing = {r.service: r for r in rows}
    stamp = {"updated_at": now, "event_id": event.id, "event_at": at}
    subscribed: list[str] = []
    cancelled: list[tuple[str, str]] = []
    for row in rows:
        if row.event_at > at:
            continue  # a newer event already decided this row
        if row.service in services:
            assert plan is not None
            if not row.active:
                session.execute(update(t).where(t.c.id == row.id)
                                .values(active=True, plan=plan, **stamp))
                subscribed.append(row.service)
            elif row.plan != plan:
                # still included, now under another plan: not a new subscription
                session.execute(update(t).where(t.c.id == row.id).values(plan=plan, **stamp))
        elif row.active:
            session.execute(update(t).where(t.c.id == row.id).values(active=False, **stamp))
            cancelled.append((row.service, row.plan))
    missing = [s for s in sorted(services) if s not in existing]
    if missing:
        assert plan is not None
        values = [{"user_id": user, "service": s, "plan": plan, "active": True,
                   "created_at": now, **stamp} for s in missing]
        subscribed.extend(_insert_missing(session, values))
    return Change(tuple(subscribed), tuple(cancelled))


def _insert_missing(session: Session, values: list[dict[str, Any]]) -> list[str]:
    """Insert the rows; return the services actually inserted.

    On PostgreSQL and SQLite a row another transaction inserted meanwhile is skipped
    (``ON CONFLICT DO NOTHING``); that transaction emits its ``plan_subscribed``.
    Elsewhere the unique constraint raises, and the delivery is retried.
    """
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite

        ins = postgresql.insert(t) if dialect == "postgresql" else sqlite.insert(t)
        stmt = ins.on_conflict_do_nothing(
            index_elements=[t.c.user_id, t.c.service]).returning(t.c.service)
        inserted = set(session.scalars(stmt, values).all())
        return [v["service"] for v in values if v["service"] in inserted]
    session.execute(insert(t), values)
    return [v["service"] for v in values]


def setup(bus: PluginBus) -> None:
    """Entry point of the ``plans`` plugin: read the settings, connect the receivers.

    Reads ``SIGNALBUS_PLANS`` (required), ``SIGNALBUS_PLANS_FIELD`` (``"plan"``),
    ``SIGNALBUS_PLANS_USER_ID_FIELD`` (``"id"``) and ``SIGNALBUS_PLANS_DEFAULT``
    (``None``). Needs a session factory: ``init_app(app, db=db)`` or ``attach(...)``.
    """
    config = bus.config
    if hasattr(config, "setdefault"):
        for key, value in DEFAULTS.items():
            config.setdefault(key, value)
    settings = Settings.from_config(config)
    if bus.session_factory is None:
        raise signalbus.ConfigurationError(
            "signalbus-plans writes to the database and got no session: call "
            "init_app(app, db=db) with the Flask-SQLAlchemy extension, or "
            "attach(sessionmaker)."
        )
    # Declared again here: the declarations above are made once, at import.
    signalbus.signal(plan_subscribed.name)
    signalbus.signal(plan_cancelled.name)
    plans = Plans(settings, bus.session_factory)
    if bus.app is not None:
        bus.app.extensions[EXTENSION] = plans
    uid, field = settings.user_id_field, settings.field
    receivers = {
        # with a default plan, a user model needs no plan column to be registered
        "user_registered": (plans.on_user_registered,
                            {uid} if settings.default is not None else {uid, field}),
        "user_plan_changed": (plans.on_user_plan_changed, {uid, field}),
        "user_deleted": (plans.on_user_deleted, {uid}),
    }
    for name, (fn, fields) in receivers.items():
        # an app without plan changes (no plan column) or deletions declares no such
        # signal: nothing to follow there (user_registered is always followed)
        if name != "user_registered" and not is_declared(name):
            bus.describe(f"{name}: not declared by the app, not followed")
            continue
        bus.requires({name: fields})
        bus.connect(name, fn, name=f"signalbus_plans:{fn.__name__}")
    bus.describe(
        f"plans: {_names(settings.plans)}; plan field {field!r}, user id field {uid!r}, "
        f"default plan {settings.default!r}"
    )
