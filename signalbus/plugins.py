"""Plugins: entry points of the group ``signalbus.plugins``, loaded one by one.

An entry point's value is a callable ``plugin(bus)`` or a module with ``setup(bus)``.
``bus`` is a :class:`PluginBus`: what the plugin connects through it belongs to the
app (bus runtime) that loaded it. A plugin may declare the fields it needs, either as
a ``requires`` attribute (``{"user_registered": {"email"}}``) or with
``bus.requires(...)``; ``init_app`` checks them against the bindings.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from typing import Any, Protocol, TypeVar

import blinker
from sqlalchemy import inspect as sa_inspect

from .bindings import registry
from .capture import plans, sync_bindings
from .errors import ConfigurationError, NotConfigured, PluginError
from .settings import Settings

__all__ = ["GROUP", "Host", "NotConfigured", "PluginBus", "PluginRecord", "check_requirements",
           "load_plugins", "start"]

log = logging.getLogger("signalbus")

GROUP = "signalbus.plugins"
F = TypeVar("F", bound=Callable[..., Any])


class Host(Protocol):
    """What plugins are loaded into: a bus runtime (:class:`signalbus.runtime.Runtime`)."""

    app: Any
    config: Mapping[str, Any]
    db: Any
    session_factory: Any
    settings: Settings
    redact: tuple[str, ...]
    plugins: list[PluginRecord]

    def connect(self, signal: str | blinker.NamedSignal, fn: Callable[..., Any], *,
                sender: Any = None, name: str | None = None,
                plugin: str | None = None) -> None: ...

    def connect_all(self, fn: Callable[..., Any], *, name: str | None = None,
                    plugin: str | None = None) -> None: ...

    def disconnect_plugin(self, plugin: str) -> None: ...

    def check_receivers(self) -> None: ...


@dataclasses.dataclass
class PluginRecord:
    """What happened to one plugin, as ``flask signalbus list`` shows it."""

    name: str
    distribution: str | None
    status: str
    """``"loaded"``, ``"failed"``, ``"disabled"`` or ``"skipped"`` (it raised
    :class:`NotConfigured`)."""
    error: str | None = None
    """Why it failed, or (``"skipped"``) why it is not configured."""
    requires: dict[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    details: list[str] = dataclasses.field(default_factory=list)
    """Lines the plugin asked ``flask signalbus list`` to show (secrets redacted by it)."""


class PluginBus:
    """The ``bus`` a plugin's ``plugin(bus)``/``setup(bus)`` is called with."""

    def __init__(self, runtime: Host, record: PluginRecord) -> None:
        self._runtime = runtime
        self._record = record

    @property
    def name(self) -> str:
        """The plugin's entry point name."""
        return self._record.name

    @property
    def app(self) -> Any:
        """The Flask app being initialised, or ``None`` for a plain SQLAlchemy bus."""
        return self._runtime.app

    @property
    def config(self) -> Mapping[str, Any]:
        """The app's config (``app.config``), or the mapping given to ``attach``."""
        return self._runtime.config

    @property
    def db(self) -> Any:
        """The Flask-SQLAlchemy extension given to ``init_app``, if any."""
        return self._runtime.db

    @property
    def session_factory(self) -> Any:
        """A callable returning a session on the host's database, for plugins that write."""
        return self._runtime.session_factory

    def connect(
        self,
        signal: str | blinker.NamedSignal,
        fn: F,
        *,
        sender: Any = None,
        name: str | None = None,
    ) -> F:
        """Connect ``fn`` to ``signal`` for this app only; returns ``fn``.

        The receiver is held strongly by the app's bus. ``name`` is its durable id
        (``module:qualname`` by default).
        """
        self._runtime.connect(signal, fn, sender=sender, name=name, plugin=self._record.name)
        return fn

    def connect_all(self, fn: F, *, name: str | None = None) -> F:
        """Connect ``fn`` to every committed event of this app, whatever its signal.

        For plugins that record everything (a journal, an audit trail); it runs after
        the receivers of the event's own signal and never sees ``phase="flush"`` events.
        """
        self._runtime.connect_all(fn, name=name, plugin=self._record.name)
        return fn

    def new_session(self) -> Any:
        """A new session on the host's database, for a receiver that writes.

        Write through it, not through the session that just committed: receivers run
        while that session is still finishing its commit (inside ``with
        session.begin():`` it cannot be used at all). It is wired to the bus like the
        host's sessions, so events of what it commits are delivered too. Close it.
        """
        factory = self._runtime.session_factory
        if factory is None:
            raise ConfigurationError(
                f"plugin {self.name!r} needs a session factory: pass db= to init_app, or "
                "attach a sessionmaker (not a single Session) to the bus."
            )
        inner = getattr(factory, "session_factory", None)  # a scoped_session's factory
        return (inner or factory)()

    def receiver(
        self, signal: str | blinker.NamedSignal, *, sender: Any = None, name: str | None = None
    ) -> Callable[[F], F]:
        """Decorator form of :meth:`connect`."""

        def decorator(fn: F) -> F:
            return self.connect(signal, fn, sender=sender, name=name)

        return decorator

    def describe(self, line: str) -> None:
        """Add a line about this plugin's setup to ``flask signalbus list``.

        Never put a secret in it: redact webhook URLs and passwords first.
        """
        self._record.details.append(line)

    def requires(self, requirements: Mapping[str, Iterable[str]]) -> None:
        """Declare the ``data`` fields this plugin needs per signal name."""
        for signal, fields in requirements.items():
            self._record.requires[signal] = self._record.requires.get(
                signal, frozenset()
            ) | frozenset(fields)


def _distribution(ep: metadata.EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


def discover() -> dict[str, list[metadata.EntryPoint]]:
    """Installed entry points of the group, by name (a name may be claimed twice)."""
    found: dict[str, list[metadata.EntryPoint]] = {}
    for ep in metadata.entry_points(group=GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def load_plugins(
    runtime: Host,
    *,
    only: Iterable[str] | None,
    disabled: Iterable[str],
    strict: bool,
) -> list[PluginRecord]:
    """Load the selected plugins into ``runtime``; return what happened to each.

    A plugin that fails is logged with its name, distribution and error and the others
    still load; with ``strict`` the first failure raises :class:`PluginError`.
    """
    found = discover()
    for name, eps in found.items():
        dists = sorted({_distribution(ep) or "?" for ep in eps})
        if len(eps) > 1:
            raise PluginError(
                name,
                f"two installed plugins are named {name!r} (distributions: "
                f"{', '.join(dists)}); uninstall one, or rename its entry point in the "
                f"{GROUP!r} group.",
            )
    disabled_set = set(disabled)
    if only is not None:
        order = list(only)
        missing = [n for n in order if n not in found]
        if missing:
            raise PluginError(
                missing[0],
                f"SIGNALBUS_PLUGINS names {', '.join(map(repr, missing))}, but no installed "
                f"distribution declares such an entry point in the {GROUP!r} group "
                f"(installed: {', '.join(sorted(found)) or 'none'}).",
            )
    else:
        order = sorted(found)
    records = []
    for name in order:
        ep = found[name][0]
        record = PluginRecord(name, _distribution(ep), "loaded")
        records.append(record)
        if name in disabled_set:
            record.status = "disabled"
            continue
        try:
            obj = ep.load()
            setup = obj.setup if isinstance(obj, types.ModuleType) else obj
            if not callable(setup):
                raise TypeError(
                    f"entry point {ep.value!r} is neither callable nor a module with setup(bus)"
                )
            # ``requires`` on the callable, else on the module that defines it
            declared = getattr(obj, "requires", None) or getattr(
                sys.modules.get(getattr(setup, "__module__", "") or ""), "requires", None
            )
            bus = PluginBus(runtime, record)
            if declared:
                bus.requires(declared)
            setup(bus)
        except NotConfigured as exc:
            runtime.disconnect_plugin(name)
            if only is None:  # installed, not asked for: skipping it is no failure
                record.status = "skipped"
                record.error = str(exc)
                _log_skip(name, record.error)
                continue
            record.status = "failed"
            record.error = f"{type(exc).__name__}: {exc}"
            message = (f"signalbus plugin {name!r} is named in SIGNALBUS_PLUGINS but not "
                       f"configured: {exc}")
            if strict:
                raise PluginError(name, message, distribution=record.distribution) from exc
            log.error("%s (the other plugins were loaded)", message)
        except Exception as exc:
            runtime.disconnect_plugin(name)
            record.status = "failed"
            record.error = f"{type(exc).__name__}: {exc}"
            message = (
                f"signalbus plugin {name!r} (distribution {record.distribution or '?'}) "
                f"failed to load: {record.error}"
            )
            if strict:
                raise PluginError(
                    name,
                    message + ". Fix or uninstall it, or add it to "
                    "SIGNALBUS_DISABLED_PLUGINS (SIGNALBUS_PLUGINS_STRICT is on).",
                    distribution=record.distribution,
                ) from exc
            log.error("%s; the other plugins were loaded", message, exc_info=True)
    return records


@functools.cache
def _log_skip(name: str, reason: str) -> None:
    """Log a skipped plugin once per process: every attach() would say it again."""
    log.info("signalbus plugin %r is installed but not configured here, skipped: %s",
             name, reason)


def check_requirements(records: Iterable[PluginRecord], redact: tuple[str, ...]) -> None:
    """Check the fields each loaded plugin requires against the bindings of its signals.

    Raises :class:`PluginError` naming the plugin, the binding and the missing fields.
    """
    for rec in records:
        if rec.status != "loaded" or not rec.requires:
            continue
        sync_bindings()
        for signal, fields in rec.requires.items():
            for binding in registry.bindings:
                if binding.signal != signal or binding.phase != "commit":
                    continue
                missing = sorted(fields - plans.payload(binding, redact))
                if not missing:
                    continue
                assert binding.cls is not None
                columns = {prop.key for prop in sa_inspect(binding.cls).column_attrs}
                absent = [f for f in missing if f not in columns]
                if absent:
                    # fields= cannot name what the model does not have: say what can help
                    fix = (f"{binding.cls.__name__} has no column attribute "
                           f"{', '.join(map(repr, absent))}: add it to the model, or "
                           f"configure plugin {rec.name!r} not to need it (see its "
                           "documentation: a plugin may offer a default).")
                else:
                    fix = ("Name them in fields= (a redacted field must be named there), "
                           "or stop excluding them.")
                raise PluginError(
                    rec.name,
                    f"plugin {rec.name!r} needs field(s) {', '.join(map(repr, missing))}"
                    f" of signal {signal!r}, but {binding.describe()} does not put them "
                    f"in the event's data. {fix}",
                    distribution=rec.distribution,
                )


def start(runtime: Host) -> None:
    """Load the plugins the runtime's settings select, then check what they require
    and the receivers they connected."""
    s = runtime.settings
    runtime.plugins = load_plugins(
        runtime, only=s.plugins, disabled=s.disabled_plugins, strict=s.plugins_strict
    )
    check_requirements(runtime.plugins, runtime.redact)
    runtime.check_receivers()
