"""The per-app runtime: settings, receivers, delivery backend; capture's sink.

One :class:`Runtime` per Flask app (kept in ``app.extensions``, as Flask-SQLAlchemy keeps
its per-app state with the app) or one for a plain SQLAlchemy bus. No Flask and no
plugin loading here: :mod:`signalbus.plugins` loads plugins into a runtime,
:mod:`signalbus.flask` wires a runtime into an app, :mod:`signalbus.bus` is the facade.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import blinker

from . import signals
from .bindings import registry
from .capture import new_ids
from .contexts import current_context
from .delivery import deliver_one, run_receiver
from .errors import ConfigurationError
from .events import Event, Outgoing, normalise_payload
from .muting import active, is_muted
from .settings import BACKENDS, Settings
from .signals import Receiver

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .plugins import PluginRecord

__all__ = ["ALL_SIGNALS", "RUNTIME_KEY", "Backend", "Runtime", "Runtimes", "make_event"]

log = logging.getLogger("signalbus")

RUNTIME_KEY = "signalbus.runtime"
"""Where a Flask app keeps its :class:`Runtime` (per-app state lives with the app, as
Flask-SQLAlchemy's does; a dictionary on the bus would keep every app of a test suite
alive through the receivers' references to it)."""

ALL_SIGNALS = "*"
"""The key under which receivers of every signal are listed."""


class Backend(Protocol):
    name: str
    prepares: bool

    def prepare(self, session: Session, events: list[Outgoing]) -> None: ...

    def committed(self, events: Iterable[Outgoing]) -> None: ...

    def emit(self, sender: Any, event: Event) -> None: ...


class Runtimes:
    """The runtimes alive in the process, in the order they were made (weakly held).

    For tools that must find "the" app without being told, such as the pytest plugin's
    ``signalbus_drain()`` outside an app context; nothing in delivery reads it.
    """

    def __init__(self) -> None:
        self._alive: weakref.WeakValueDictionary[int, Runtime] = weakref.WeakValueDictionary()
        self._made = 0

    def add(self, runtime: Runtime) -> None:
        self._made += 1
        self._alive[self._made] = runtime

    @property
    def made(self) -> int:
        """How many runtimes were made so far (a mark for :meth:`since`)."""
        return self._made

    def since(self, mark: int) -> list[Runtime]:
        """The runtimes made after ``mark`` that are still alive, oldest first."""
        return [rt for n, rt in sorted(self._alive.items()) if n > mark]


class Runtime:
    """One app's bus: settings, plugin receivers, delivery. Implements capture's sink."""

    made: Runtimes = Runtimes()
    """Every runtime of the process, weakly (see :class:`Runtimes`)."""

    def __init__(
        self,
        bus: Any,
        config: Mapping[str, Any],
        *,
        app: Any = None,
        db: Any = None,
        session_factory: Any = None,
    ) -> None:
        self.bus = bus
        """The :class:`~signalbus.SignalBus` that made this runtime."""
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
        Runtime.made.add(self)
        if self.backend.name == "inline":
            trigger = [b.describe() for b in registry.bindings if b.capture == "trigger"]
            if trigger:
                log.warning(
                    "signalbus: %s captured by database triggers, which SIGNALBUS_DELIVERY="
                    "'inline' does not deliver: the changes wait in signalbus_outbox_changes "
                    "until a worker (or relay) of an app with SIGNALBUS_DELIVERY='outbox' or "
                    "'celery' runs.", ", ".join(trigger))

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

    def committed(self, events: Iterable[Outgoing]) -> None:
        self.backend.committed(events)

    def run_flush_phase(self, sender: type[Any], event: Event) -> None:
        # inside the flush: exceptions propagate and abort it, as Django's pre_save does
        for rec in self.receivers_for(event.signal, sender, flush=True):
            run_receiver(rec, sender, event, propagate=True)

    def deliver(self, sender: Any, event: Event) -> list[tuple[Receiver, BaseException]]:
        """Run the receivers of one event now (used by workers)."""
        return deliver_one(self, sender, event)

    # startup checks (plugin loading and its requirement checks: signalbus.plugins) -----

    def check_receivers(self) -> None:
        """Check signal names of runtime receivers and (outside inline) receiver names."""
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
        context=current_context(),
    )


