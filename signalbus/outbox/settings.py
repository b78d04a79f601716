"""The outbox's settings, the engine it lives on, and its clock.

Settings (app config, or ``attach(config=...)``), with their defaults in
:data:`signalbus.settings.DEFAULTS`:

``SIGNALBUS_OUTBOX_BATCH`` (100)
    events (and, separately, retried deliveries) a worker claims at once.
``SIGNALBUS_OUTBOX_LEASE`` (60 s)
    how long a claim lasts; a worker renews it every half lease while it works
    (also while one slow receiver runs), and the claims of a worker that died are
    taken again once it expires.
``SIGNALBUS_OUTBOX_BACKOFF_BASE`` (2 s), ``SIGNALBUS_OUTBOX_BACKOFF_CAP`` (3600 s)
    the delay before attempt *n + 1* is ``min(cap, base * 2 ** (n - 1))``, of which a
    random part (up to half) is taken off: "equal jitter". ``Retry(after=)`` is
    clamped to ``[0, cap]``.
``SIGNALBUS_OUTBOX_MAX_ATTEMPTS`` (10)
    attempts before a failing delivery is ``dead``.
``SIGNALBUS_OUTBOX_POLL`` (2 s)
    how often a worker looks for due work without being woken: the fallback when a
    notification is missed, and the only mechanism on SQLite.
``SIGNALBUS_OUTBOX_ACK_INTERVAL`` (0.5 s)
    the longest a worker keeps successes unrecorded, also while a slow receiver runs
    (on PostgreSQL a timer records them): a worker that dies repeats at most the
    deliveries it made in that time, plus the one it was running.
``SIGNALBUS_OUTBOX_NOTIFY`` (true), ``SIGNALBUS_OUTBOX_CHANNEL`` (``"signalbus"``)
    whether commits send a PostgreSQL ``NOTIFY``, and on which channel.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Connection, Engine

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["OutboxSettings", "aware", "engine_of", "utcnow"]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (every outbox time is UTC)."""
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """``value`` as aware UTC: SQLite gives stored datetimes back without their zone."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class OutboxSettings:
    """The outbox's settings, read from the app config (see the module docstring)."""

    batch: int = 100
    lease: float = 60.0
    backoff_base: float = 2.0
    backoff_cap: float = 3600.0
    max_attempts: int = 10
    poll: float = 2.0
    ack_interval: float = 0.5
    notify: bool = True
    channel: str = "signalbus"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OutboxSettings:
        """Read and check the ``SIGNALBUS_OUTBOX_*`` keys."""
        defaults = {f"SIGNALBUS_OUTBOX_{f.name.upper()}": f.default
                    for f in dataclasses.fields(cls)}

        def get(key: str, kind: type[Any], minimum: float | None = None) -> Any:
            raw = config.get(key, defaults[key])
            try:
                if kind is bool and isinstance(raw, str):
                    value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
                else:
                    value = kind(raw)
            except (TypeError, ValueError):
                wanted = {int: "a whole number", float: "a number of seconds"}.get(kind, "text")
                raise ConfigurationError(f"{key} is {raw!r}; it must be {wanted}.") from None
            if kind in (int, float) and not math.isfinite(value):
                raise ConfigurationError(f"{key} is {raw!r}; it must be a finite number.")
            if minimum is not None and value < minimum:
                raise ConfigurationError(f"{key} is {raw!r}; it must be at least {minimum}.")
            return value

        channel = str(get("SIGNALBUS_OUTBOX_CHANNEL", str))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", channel):
            raise ConfigurationError(
                f"SIGNALBUS_OUTBOX_CHANNEL is {channel!r}; use a plain identifier "
                "(letters, digits and '_', at most 63 characters)."
            )
        return cls(
            batch=get("SIGNALBUS_OUTBOX_BATCH", int, 1),
            lease=get("SIGNALBUS_OUTBOX_LEASE", float, 0.1),
            backoff_base=get("SIGNALBUS_OUTBOX_BACKOFF_BASE", float, 0),
            backoff_cap=get("SIGNALBUS_OUTBOX_BACKOFF_CAP", float, 0),
            max_attempts=get("SIGNALBUS_OUTBOX_MAX_ATTEMPTS", int, 1),
            poll=get("SIGNALBUS_OUTBOX_POLL", float, 0.01),
            ack_interval=get("SIGNALBUS_OUTBOX_ACK_INTERVAL", float, 0),
            notify=get("SIGNALBUS_OUTBOX_NOTIFY", bool),
            channel=channel,
        )


def engine_of(runtime: Runtime) -> Engine:
    """The engine of the database a runtime's sessions write to (and its outbox lives in).

    Flask-SQLAlchemy: ``db.engine`` of the runtime's app (its default bind). Plain
    SQLAlchemy: the ``bind`` of the attached ``sessionmaker`` / ``scoped_session``.
    """
    if runtime.db is not None:
        if runtime.app is not None:
            with runtime.app.app_context():
                return _sync_engine(runtime.db.engine)
        return _sync_engine(runtime.db.engine)
    factory = runtime.session_factory
    for holder in (factory, getattr(factory, "session_factory", None)):
        kw = getattr(holder, "kw", None)
        if isinstance(kw, dict) and kw.get("bind") is not None:
            return _sync_engine(kw["bind"])
    bind = getattr(factory, "bind", None)
    if bind is not None:
        return _sync_engine(bind)
    raise ConfigurationError(
        "signalbus cannot find the database of the outbox: attach a sessionmaker bound to "
        "an engine (sessionmaker(engine)), give init_app a Flask-SQLAlchemy db, or pass "
        "engine= to the worker."
    )


def _sync_engine(bind: Any) -> Engine:
    if isinstance(bind, Connection):
        return bind.engine
    if isinstance(bind, Engine):
        return bind
    raise ConfigurationError(
        f"the outbox needs a synchronous SQLAlchemy Engine, but the session is bound to "
        f"{bind!r}. With async sessions, pass engine=create_engine(<sync URL>) to the "
        "worker, and emit() with session=... so that the event joins a transaction."
    )
