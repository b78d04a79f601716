"""The bus: settings, per-app runtime state, plugin receivers and session wiring.

:class:`SignalBus` is the extension object. What belongs to one app (its settings, the
receivers its plugins connected, its delivery mode) lives in a :class:`Runtime`: one
per Flask app, kept in a ``WeakKeyDictionary`` keyed by the app as Flask-SQLAlchemy
keeps its engines, or one for a plain SQLAlchemy bus made by :meth:`SignalBus.attach`.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import blinker

from . import capture, signals
from .bindings import registry
from .delivery import deliver_one, run_receiver
from .errors import ConfigurationError, PluginError
from .events import Event, Outgoing, normalise_payload
from .plugins import PluginRecord, load_plugins
from .signals import Receiver

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["DEFAULTS", "Runtime", "SignalBus", "Settings"]

log = logging.getLogger("signalbus")

DEFAULTS: dict[str, Any] = {
    "SIGNALBUS_DELIVERY": "inline",
    "SIGNALBUS_REDACT": ("password", "secret", "token", "api_key"),
    "SIGNALBUS_MUTED": False,
    "SIGNALBUS_PLUGINS": None,
    "SIGNALBUS_DISABLED_PLUGINS": (),
    "SIGNALBUS_PLUGINS_STRICT": False,
    "SIGNALBUS_MAX_DEPTH": 10,
    # the outbox and its worker (signalbus.outbox, signalbus.worker)
    "SIGNALBUS_OUTBOX_BATCH": 100,
    "SIGNALBUS_OUTBOX_LEASE": 60.0,
    "SIGNALBUS_OUTBOX_BACKOFF_BASE": 2.0,
    "SIGNALBUS_OUTBOX_BACKOFF_CAP": 3600.0,
    "SIGNALBUS_OUTBOX_MAX_ATTEMPTS": 10,
    "SIGNALBUS_OUTBOX_POLL": 2.0,
    "SIGNALBUS_OUTBOX_NOTIFY": True,
    "SIGNALBUS_OUTBOX_CHANNEL": "signalbus",
    "SIGNALBUS_OUTBOX_ACK_INTERVAL": 0.5,
}
"""Every setting a bus reads, with its default (backends may add their own)."""

RUNTIME_KEY = "signalbus.runtime"
"""Where a Flask app keeps its :class:`Runtime` (per-app state lives with the app, as
Flask-SQLAlchemy's does; a dictionary on the bus would keep every app of a test suite
alive through the receivers' references to it)."""

ALL_SIGNALS = "*"
"""The key under which receivers of every signal are listed."""

BACKENDS: dict[str, str] = {
    "inline": "signalbus.delivery:Inline",
    "outbox": "signalbus.outbox:Outbox",
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of one runtime, read once from the app config (or ``attach``)."""

    delivery: str
    redact: tuple[str, ...]
    muted: frozenset[str]
    plugins: tuple[str, ...] | None
    disabled_plugins: tuple[str, ...]
    plugins_strict: bool
    max_depth: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        from .muting import parse_muted

        def get(key: str) -> Any:
            return config.get(key, DEFAULTS[key])

        delivery = str(get("SIGNALBUS_DELIVERY"))
        if delivery not in BACKENDS:
            raise ConfigurationError(
                f"SIGNALBUS_DELIVERY is {delivery!r}; use one of "
                f"{', '.join(map(repr, BACKENDS))}."
            )
        plugins = get("SIGNALBUS_PLUGINS")
        if isinstance(plugins, str):
            plugins = [p.strip() for p in plugins.split(",") if p.strip()]
        disabled = get("SIGNALBUS_DISABLED_PLUGINS") or ()
        if isinstance(disabled, str):
            disabled = [p.strip() for p in disabled.split(",") if p.strip()]
        redact = get("SIGNALBUS_REDACT") or ()
        if isinstance(redact, str):
            redact = [p.strip() for p in redact.split(",") if p.strip()]
        return cls(
            delivery=delivery,
            redact=tuple(p.lower() for p in redact),
            muted=parse_muted(get("SIGNALBUS_MUTED")),
            plugins=tuple(plugins) if plugins is not None else None,
            disabled_plugins=tuple(disabled),
            plugins_strict=bool(get("SIGNALBUS_PLUGINS_STRICT")),
            max_depth=int(get("SIGNALBUS_MAX_DEPTH")),
        )


class Backend(Protocol):
    name: str
    prepares: bool

    def prepare(self, session: Session, events: list[Outgoing]) -> None: ...

    def committed(self, events: list[Outgoing]) -> None: ...

    def emit(self, sender: Any, event: Event) -> None: ...


class Runtime:
    """One app's bus: settings, plugin receivers, delivery. Implements capture's sink."""

    def __init__(
        self,
        bus: SignalBus,
        config: Mapping[str, Any],
        *,
        app: Any = None,
        db: Any = None,
        session_factory: Any = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.settings = Settings.from_config(config)
        self.app = app
        self.db = db
        self.session_factory = session_factory
        self.redact = self.settings.redact
        self.muted = self.settings.muted
        self.max_depth = self.settings.max_depth
        self._receivers: dict[str, list[Receiver]] = {}
        self.plugins: list[PluginRecord] = []
        self.backend: Backend = self._make_backend()
        self.prepares = self.backend.prepares

    def _make_backend(self) -> Backend:
        path = BACKENDS[self.settings.delivery]
        module_name, _, attr = path.partition(":")
        factory: Callable[[Runtime], Backend] = getattr(importlib.import_module(module_name), attr)
        return factory(self)

    # receivers ------------------------------------------------------------------------

    def connect(
        self,
        signal: str | blinker.NamedSignal,
        fn: Callable[..., Any],
        *,
        sender: Any = None,
        name: str | None = None,
        plugin: str | None = None,
    ) -> None:
        """Connect ``fn`` for this runtime only (what plugins do through their bus)."""
        sig = signals.resolve(signal)
        rec = Receiver(fn, name or signals.default_name(fn), sig.name, sender, plugin)
        if self.backend.name != "inline":
            self._check_stable(rec)
        self._receivers.setdefault(sig.name, []).append(rec)

    def disconnect_plugin(self, plugin: str) -> None:
        """Forget what a plugin connected (it failed half-way through its setup)."""
        for name, recs in self._receivers.items():
            self._receivers[name] = [r for r in recs if r.plugin != plugin]

    def _check_stable(self, rec: Receiver) -> None:
        if not signals.is_stable_name(rec.name):
            raise ConfigurationError(
                f"receiver {rec.name!r} of signal {rec.signal!r} has no stable name, which "
                f"SIGNALBUS_DELIVERY={self.settings.delivery!r} needs to track its deliveries "
                "across restarts. Define it at module level, or give it one with name=..."
            )

    def connect_all(self, fn: Callable[..., Any], *, name: str | None = None,
                    plugin: str | None = None) -> None:
        """Connect ``fn`` to every committed event of this runtime, whatever its signal.

        It runs after the receivers of the event's own signal. ``phase="flush"`` events
        do not reach it: they are not committed.
        """
        rec = Receiver(fn, name or signals.default_name(fn), ALL_SIGNALS, None, plugin)
        if self.backend.name != "inline":
            self._check_stable(rec)
        self._receivers.setdefault(ALL_SIGNALS, []).append(rec)

    def receivers_for(self, signal: str, sender: Any, *, flush: bool = False) -> list[Receiver]:
        """Import-time receivers (in connection order), then this runtime's, in order,
        then those connected to every signal (not for ``flush`` phase events)."""
        out = list(signals.global_receivers(signals._get(signal), sender))
        for rec in self._receivers.get(signal, ()):
            if rec.sender is None or rec.sender is sender:
                out.append(rec)
        if not flush:
            out.extend(self._receivers.get(ALL_SIGNALS, ()))
        return out

    def receivers(self) -> dict[str, list[Receiver]]:
        """Every receiver by signal name (for ``flask signalbus list``)."""
        out: dict[str, list[Receiver]] = {}
        for name in sorted(set(signals._signals) | set(self._receivers) - {ALL_SIGNALS}):
            sig = signals._get(name)
            recs = [Receiver(fn, signals.receiver_name(fn), name) for fn in _all_receivers(sig)]
            recs.extend(self._receivers.get(name, ()))
            if recs:
                out[name] = recs
        if self._receivers.get(ALL_SIGNALS):
            out[ALL_SIGNALS] = list(self._receivers[ALL_SIGNALS])
        return out

    def find_receiver(self, signal: str, name: str) -> Receiver | None:
        """The receiver of ``signal`` with durable name ``name`` (the outbox's lookup)."""
        listing = self.receivers()
        candidates: list[Receiver] = [*listing.get(signal, ()), *listing.get(ALL_SIGNALS, ())]
        for rec in candidates:
            if rec.name == name:
                return rec
        return None

    # sink (called by capture) -----------------------------------------------------------

    def prepare(self, session: Session, events: list[Outgoing]) -> None:
        self.backend.prepare(session, events)

    def committed(self, events: list[Outgoing]) -> None:
        self.backend.committed(events)

    def run_flush_phase(self, sender: type[Any], event: Event) -> None:
        # inside the flush: exceptions propagate and abort it, as Django's pre_save does
        for rec in self.receivers_for(event.signal, sender, flush=True):
            run_receiver(rec, sender, event, propagate=True)

    def deliver(self, sender: Any, event: Event) -> list[tuple[Receiver, BaseException]]:
        """Run the receivers of one event now (used by workers)."""
        return deliver_one(self, sender, event)

    # startup ----------------------------------------------------------------------------

    def load_plugins(self) -> None:
        s = self.settings
        self.plugins = load_plugins(
            self, only=s.plugins, disabled=s.disabled_plugins, strict=s.plugins_strict
        )
        self.check()

    def check(self) -> None:
        """Check plugin requirements, signal names and (outside inline) receiver names."""
        from .capture import plans, sync_bindings

        for rec in self.plugins:
            if rec.status != "loaded" or not rec.requires:
                continue
            sync_bindings()
            for signal, fields in rec.requires.items():
                for binding in registry.bindings:
                    if binding.signal != signal or binding.phase != "commit":
                        continue
                    payload = plans.payload(binding, self.redact)
                    missing = sorted(fields - payload)
                    if missing:
                        raise PluginError(
                            rec.name,
                            f"plugin {rec.name!r} needs field(s) {', '.join(map(repr, missing))}"
                            f" of signal {signal!r}, but {binding.describe()} does not put "
                            "them in the event's data. Name them in fields= (a redacted "
                            "field must be named there), or stop excluding them.",
                            distribution=rec.distribution,
                        )
        for name, recs in self._receivers.items():
            if name == ALL_SIGNALS or signals.is_declared(name):
                continue
            plugins = sorted({r.plugin or "?" for r in recs})
            try:
                signals.check_declared(name, what=f"plugin(s) {', '.join(plugins)} connected to")
            except ConfigurationError as exc:
                if self.settings.plugins_strict:
                    raise
                log.warning("%s", exc)
        if self.backend.name != "inline":
            for recs in self.receivers().values():
                for r in recs:
                    self._check_stable(r)

    # emitting ---------------------------------------------------------------------------

    def emit(self, signal: str | blinker.NamedSignal, data: Mapping[str, Any]) -> Event:
        """Deliver (or store, by delivery mode) a domain event now, outside any session."""
        from .muting import active, is_muted

        event = make_event(signal, data)
        if not is_muted(event.signal, active(self.muted)):
            self.backend.emit(None, event)
        return event


def _all_receivers(sig: signals.Signal) -> list[Callable[..., Any]]:
    out = []
    for ref in list(sig.receivers.values()):
        fn = ref() if isinstance(ref, weakref.ref) else ref
        if fn is not None:
            out.append(fn)
    return out


def make_event(signal: str | blinker.NamedSignal, data: Mapping[str, Any]) -> Event:
    """Build the event of an :func:`emit` call (its data normalised, its signal declared)."""
    import datetime as dt

    from .capture import new_ids

    sig = signals.resolve(signal)
    signals.check_declared(sig.name, what="emit() was given an")
    if not isinstance(data, Mapping):
        raise TypeError(f"emit() data must be a mapping, not {type(data).__name__}")
    return Event(
        id=new_ids(1)[0],
        signal=sig.name,
        model=None,
        op="emit",
        pk=None,
        data=normalise_payload(data, f"emit({sig.name!r}) data"),
        occurred_at=dt.datetime.now(dt.UTC),
        source="emit",
    )


class SignalBus:
    """The signalbus extension.

    ``app.extensions["signalbus"]`` is the bus; the app's own state (settings, plugin
    receivers, delivery) is its :class:`Runtime`, from :meth:`runtime`.

    Flask::

        bus = SignalBus()            # or signalbus.bus, the default one
        bus.init_app(app, db=db)     # in the app factory

    Plain SQLAlchemy::

        bus = SignalBus()
        bus.attach(sessionmaker(engine), config={"SIGNALBUS_DELIVERY": "inline"})
    """

    def __init__(self, app: Any = None, *, db: Any = None) -> None:
        self.db = db
        self._plain: Runtime | None = None
        self._lock = threading.Lock()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Any, db: Any = None) -> None:
        """Register the bus on a Flask app.

        Reads, with ``app.config.setdefault``: ``SIGNALBUS_DELIVERY`` (``"inline"`` or
        ``"outbox"``), ``SIGNALBUS_REDACT`` (substrings of attribute names
        left out of payloads), ``SIGNALBUS_MUTED``, ``SIGNALBUS_PLUGINS`` (explicit list,
        in order), ``SIGNALBUS_DISABLED_PLUGINS``, ``SIGNALBUS_PLUGINS_STRICT``,
        ``SIGNALBUS_MAX_DEPTH`` (the chain limit of receivers committing changes), and
        the delivery mode's own keys. Loads the installed plugins, checks their
        requirements, and wires the Flask-SQLAlchemy session of ``db`` (or of the ``db``
        given to the constructor).
        """
        from .flask import init_app

        init_app(self, app, db if db is not None else self.db)

    def attach(self, target: Any, *, config: Mapping[str, Any] | None = None,
               plugins: bool = True) -> Runtime:
        """Attach to a plain SQLAlchemy ``sessionmaker``, ``scoped_session``, ``Session``,
        ``async_sessionmaker``, ``async_scoped_session`` or ``AsyncSession``.

        ``config`` takes the same ``SIGNALBUS_*`` keys as a Flask app's config; the first
        ``attach`` makes the bus's runtime, later ones wire more session factories to
        it. ``plugins=False`` skips loading entry-point plugins.
        """
        with self._lock:
            if self._plain is None:
                factory = target if callable(target) else None
                runtime = Runtime(self, dict(DEFAULTS, **(config or {})), session_factory=factory)
                self._plain = runtime
                if plugins:
                    runtime.load_plugins()
            elif config is not None:
                raise ConfigurationError(
                    "this bus is already attached; pass config= on the first attach() only, "
                    "or make another SignalBus() for different settings."
                )
            runtime = self._plain
        from .sqlite import check_target

        check_target(target)
        from .flask import _resolve_current_app

        def resolve(session: Session) -> Runtime:
            # inside an app context of an app this bus is registered on, that app's
            # runtime; elsewhere the plain one
            return _resolve_current_app(session) or runtime

        if not capture.attach_session(target, resolve):
            log.debug("%r was already attached", target)
        return runtime

    def runtime(self, app: Any = None) -> Runtime:
        """The runtime of ``app`` (the current Flask app by default), else the plain one."""
        if app is None:
            from .flask import current_app_or_none

            app = current_app_or_none()
        if app is not None:
            rt = app.extensions.get(RUNTIME_KEY)
            if isinstance(rt, Runtime):
                return rt
        if self._plain is not None:
            return self._plain
        raise ConfigurationError(
            "no signalbus is set up here: call signalbus.init_app(app) (and work inside "
            "its app context) or signalbus.attach(sessionmaker)."
        )

    def emit(self, signal: str | blinker.NamedSignal, data: Mapping[str, Any], *,
             session: Session | None = None) -> Event:
        """Send a domain event not tied to a row.

        With ``session``, the event joins that session's transaction (beginning one if
        none is active) and is delivered only if it commits, in order with the row
        events. Without, it is delivered (or stored, in outbox mode) now. Raises
        :class:`ConfigurationError` for a signal name nobody declared.
        """
        if session is None:
            return self.runtime().emit(signal, data)
        from .muting import active, is_muted

        event = make_event(signal, data)
        st = capture.session_state(session)
        sink = st.tracker.resolve(session) or self.runtime()
        if not is_muted(event.signal, active(sink.muted)):
            capture.emit_into(session, None, event, sink)
        return event

