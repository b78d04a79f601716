"""Named signals and receivers.

Signals are ordinary blinker signals living in signalbus's own namespace, so
``signal("user_registered").connect(fn)`` works as blinker users expect. Two things
differ from a plain :class:`blinker.NamedSignal`:

* receivers are yielded in the order they were connected (blinker keeps them in a set,
  whose order is not defined), so delivery is deterministic;
* every receiver has a durable *name* (``module:qualname`` unless given), the id the
  outbox uses to track each (event, receiver) delivery across restarts.
"""

from __future__ import annotations

import difflib
import threading
import weakref
from collections.abc import Callable, Generator
from typing import Any, NamedTuple, TypeVar

import blinker
from blinker._utilities import make_id
from blinker.base import ANY_ID

from .errors import ConfigurationError

__all__ = ["Receiver", "Signal", "receiver", "signal"]

F = TypeVar("F", bound=Callable[..., Any])


class Signal(blinker.NamedSignal):
    """A blinker :class:`~blinker.NamedSignal` that yields receivers in connection order."""

    def connect(self, receiver: F, sender: Any = blinker.ANY, weak: bool = True) -> F:
        """Connect as blinker does, remembering the receiver's durable default name."""
        # (re)set: an id may be reused by a new function once an old one is collected
        _names[make_id(receiver)] = default_name(receiver)
        return super().connect(receiver, sender, weak)

    def receivers_for(self, sender: Any) -> Generator[Callable[..., Any], None, None]:
        """Yield the receivers for ``sender`` (and for any sender), oldest connection first.

        Weakly referenced receivers that have been garbage collected are disconnected
        and skipped, as in blinker.
        """
        for _, fn in self.named_receivers_for(sender):
            yield fn

    def named_receivers_for(self, sender: Any) -> list[tuple[Any, Callable[..., Any]]]:
        """``(receiver id, receiver)`` pairs for ``sender``, oldest connection first."""
        receivers = self.receivers
        if not receivers:
            return []
        by_sender = self._by_sender
        any_ids = by_sender.get(ANY_ID, ())
        sender_ids = by_sender.get(make_id(sender), ()) if sender is not None else ()
        out = []
        dead = []
        # Copy: a receiver may connect or disconnect others while we deliver.
        for receiver_id, ref in list(receivers.items()):
            if receiver_id not in any_ids and receiver_id not in sender_ids:
                continue
            if isinstance(ref, weakref.ref):
                strong = ref()
                if strong is None:
                    dead.append(receiver_id)
                    continue
                out.append((receiver_id, strong))
            else:
                out.append((receiver_id, ref))
        for receiver_id in dead:
            self._disconnect(receiver_id, ANY_ID)
        return out


_lock = threading.Lock()
_signals: dict[str, Signal] = {}
_declared: set[str] = set()
_names: dict[Any, str] = {}


def _get(name: str) -> Signal:
    """Return the signal called ``name`` without declaring it."""
    sig = _signals.get(name)
    if sig is None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"a signal name must be a non-empty string, not {name!r}")
        with _lock:
            sig = _signals.setdefault(name, Signal(name))
    return sig


def signal(name: str, doc: str | None = None) -> Signal:
    """Return the signal called ``name``, creating and declaring it on first use.

    The same name always gives the same object. Declaring a signal is what makes
    :func:`signalbus.emit` accept its name; :func:`signalbus.bind` declares the
    signals it sends.
    """
    sig = _get(name)
    if doc is not None and sig.__doc__ != doc:
        sig.__doc__ = doc
    _declared.add(name)
    return sig


def resolve(sig: str | blinker.NamedSignal) -> Signal:
    """Accept a name or a signal object where the API takes either."""
    if isinstance(sig, Signal):
        return sig
    if isinstance(sig, blinker.NamedSignal):
        raise ConfigurationError(
            f"signal {sig.name!r} is a plain blinker signal; "
            f"use signalbus.signal({sig.name!r}) to get signalbus's signal of that name"
        )
    return _get(sig)


def is_declared(name: str) -> bool:
    """Whether ``name`` was declared by :func:`signal` or :func:`signalbus.bind`."""
    return name in _declared


def declared() -> list[str]:
    """The names of every declared signal, sorted."""
    return sorted(_declared)


def check_declared(name: str, *, what: str) -> None:
    """Raise a :class:`ConfigurationError` naming ``name`` if it was never declared."""
    if name in _declared:
        return
    hint = difflib.get_close_matches(name, _declared, n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    raise ConfigurationError(
        f"{what} unknown signal {name!r}: no bind() or signalbus.signal() declares it."
        f"{suggestion} Declare it with signalbus.signal({name!r}) where the signal is owned."
    )


def default_name(fn: Callable[..., Any]) -> str:
    """The durable name a receiver gets when none is given: ``module:qualname``."""
    target = getattr(fn, "__func__", fn)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or repr(target)
    return f"{module}:{qualname}"


def receiver_name(fn: Callable[..., Any]) -> str:
    """The durable name of a connected receiver."""
    return _names.get(make_id(fn)) or default_name(fn)


def is_stable_name(name: str) -> bool:
    """Whether a receiver name can identify the same code after a restart.

    Lambdas and functions defined inside other functions get a new identity every
    time; the outbox cannot track them.
    """
    return "<lambda>" not in name and "<locals>" not in name


class Receiver(NamedTuple):
    """A receiver as delivery sees it: the callable, its durable name and its origin."""

    fn: Callable[..., Any]
    name: str
    signal: str
    sender: Any = None
    plugin: str | None = None
    """The plugin that connected it; ``None`` for an import-time ``@receiver``."""


def global_receivers(sig: Signal, sender: Any) -> list[Receiver]:
    """The receivers connected on the signal itself (declarations and ``.connect``)."""
    names = _names
    name = sig.name
    return [Receiver(fn, names.get(rid) or default_name(fn), name)
            for rid, fn in sig.named_receivers_for(sender)]


def receiver(
    sig: str | blinker.NamedSignal,
    *,
    sender: Any = None,
    name: str | None = None,
) -> Callable[[F], F]:
    """Connect the decorated function to ``sig`` for every bus in the process.

    ``@receiver`` is a declaration, like Django's: the function is held strongly
    (blinker's ``connect_via`` default), so a receiver defined at module level stays
    connected. ``sender`` restricts it to one model class (exact class, as blinker
    matches senders). ``name`` is its durable id, ``module:qualname`` by default; the
    outbox tracks deliveries by it, so keep it stable once events are stored.

    The receiver is called as ``fn(sender, event=event)``. Its exception contract is
    the delivery mode's: inline delivery logs an exception to the ``signalbus``
    logger and goes on with the next receiver.

    Plugins connect through the bus they are given (``bus.receiver``), not with this
    decorator, so that each app reaches only its own plugins' receivers.
    """
    target = resolve(sig)

    def decorator(func: F) -> F:
        target.connect(func, sender=blinker.ANY if sender is None else sender, weak=False)
        if name is not None:
            _names[make_id(func)] = name
        return func

    return decorator
