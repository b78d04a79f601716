"""Delivery: running receivers for committed events.

This module knows receivers and events, not Flask nor how events were captured. It
holds the inline delivery mode (the default) and the hooks the test plugin uses to
see deliveries and receiver errors.

Inline exception contract: a receiver's exception is logged to the ``signalbus``
logger with the event id and traceback, the other receivers still run, and the commit
stands. Events committed by a receiver are queued behind the events already being
delivered (breadth-first); a chain of receivers re-triggering each other is cut off
after ``SIGNALBUS_MAX_DEPTH`` levels with an error naming the chain.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from . import logs
from .errors import Permanent, Retry, SignalBusError
from .events import Event, Outgoing
from .redaction import redact
from .signals import Receiver

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["Inline", "Instrument", "Outcome", "ReceiverCycle", "deliver_one", "instruments",
           "loaded", "run_receiver", "settled"]

log = logging.getLogger("signalbus")

class Target(Protocol):
    """What delivery needs of a bus: its receivers and its chain limit."""

    max_depth: int

    def receivers_for(self, signal: str, sender: Any, *, flush: bool = False
                      ) -> Sequence[Receiver]: ...


class ReceiverCycle(SignalBusError):
    """Receivers kept committing changes that re-triggered signals past the depth limit."""


ErrorHook = Callable[[Receiver | None, Event, BaseException], None]
Observer = Callable[[Any, Event], None]

observers: list[Observer] = []
"""Called with ``(sender, event)`` for every event about to be delivered (test capture)."""
error_hooks: list[ErrorHook] = []
"""Called for every receiver error delivery swallows (the test plugin fails the test)."""


class Instrument(Protocol):
    """An observer of receiver runs: metrics (:mod:`signalbus.metrics`), tracing
    (:mod:`signalbus.tracing`). Instruments are process-wide (like the test hooks
    above): append one to :data:`instruments` to switch it on."""

    def run(self, receiver: Receiver, sender: Any, event: Event
            ) -> contextlib.AbstractContextManager[Callable[[Outcome], None]]:
        """Around one run of ``receiver`` (the receiver runs inside it); what it yields
        is called with the run's :class:`Outcome` before it exits."""
        ...

    def settled(self, signal: str, receiver: str, result: str) -> None:
        """A delivery's fate: ``"delivered"``, ``"retried"`` (another attempt is
        scheduled) or ``"dead"`` (given up; inline, every failure)."""
        ...


instruments: list[Instrument] = []
"""The instruments switched on in this process (empty: receivers run bare)."""


def settled(signal: str, receiver: str, result: str) -> None:
    """Tell the instruments a delivery's fate (see :meth:`Instrument.settled`)."""
    for instrument in list(instruments):
        instrument.settled(signal, receiver, result)


def loaded(event: Event, payload: Any) -> None:
    """Hand the stored payload of ``event`` to the instruments that read it (tracing:
    the trace context stored at commit), before its receivers run in a worker."""
    for instrument in list(instruments):
        hook = getattr(instrument, "loaded", None)
        if hook is not None:
            hook(event, payload)


def report_error(receiver: Receiver | None, event: Event, exc: BaseException) -> None:
    for hook in list(error_hooks):
        hook(receiver, event, exc)


def notify(sender: Any, event: Event) -> None:
    for observer in list(observers):
        observer(sender, event)


class Outcome(NamedTuple):
    """What one run of a receiver came to (see :func:`run_receiver`)."""

    kind: str
    """``"ok"``, ``"retry"`` (:class:`~signalbus.Retry`), ``"permanent"``
    (:class:`~signalbus.Permanent`) or ``"error"`` (any other exception)."""
    error: BaseException | None = None
    after: float | None = None
    """``Retry(after=...)``: the delay the receiver asked for, unchecked."""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


OK = Outcome("ok")


def run_receiver(receiver: Receiver, sender: Any, event: Event, *,
                 retries: bool = False, propagate: bool = False) -> Outcome:
    """Run one receiver and classify how it ended; the one place a receiver is called.

    Exception contract: an ``Exception`` never propagates; it is logged to the
    ``signalbus`` logger (with the event id; a traceback unless the receiver said
    ``Retry`` or ``Permanent``), reported to :data:`error_hooks` (the test plugin) unless
    it is a ``Retry`` the caller will honour, and returned as an :class:`Outcome`.
    ``retries`` says whether the caller retries and gives up (the outbox worker); where
    it does not (inline delivery), ``Retry`` and ``Permanent`` are errors like any
    other. With ``propagate`` (the flush phase) the exception propagates untouched and
    aborts the flush, as an exception in Django's ``pre_save`` does.
    """
    if propagate:
        receiver.fn(sender, event=event)
        return OK
    if instruments:
        return _instrumented(receiver, sender, event, retries)
    return _run(receiver, sender, event, retries)


def _instrumented(receiver: Receiver, sender: Any, event: Event, retries: bool) -> Outcome:
    with contextlib.ExitStack() as stack:
        done = [stack.enter_context(i.run(receiver, sender, event)) for i in list(instruments)]
        outcome = _run(receiver, sender, event, retries)
        for finish in done:
            finish(outcome)
    if outcome.ok:
        settled(event.signal, receiver.name, "delivered")
    elif not retries:  # inline: nothing retries it
        settled(event.signal, receiver.name, "dead")
    return outcome


def _run(receiver: Receiver, sender: Any, event: Event, retries: bool) -> Outcome:
    # the event of every line logged while the receiver runs (signalbus.logs)
    token = logs.current.set((event.id, event.signal, receiver.name))
    try:
        return _call(receiver, sender, event, retries)
    finally:
        logs.current.reset(token)


def _call(receiver: Receiver, sender: Any, event: Event, retries: bool) -> Outcome:
    try:
        receiver.fn(sender, event=event)
    except (Retry, Permanent) as exc:
        if not retries:  # inline: nothing to retry or give up on, an error like any other
            return _failed(receiver, event, exc)
        if isinstance(exc, Permanent):
            log.error("receiver %s gave up on %s event %s (attempt %d): %s",
                      receiver.name, event.signal, event.id, event.attempt, redact(str(exc)))
            report_error(receiver, event, exc)
            return Outcome("permanent", exc)
        log.info("receiver %s asked to retry %s event %s (attempt %d): %s",
                 receiver.name, event.signal, event.id, event.attempt, redact(str(exc)))
        return Outcome("retry", exc, exc.after)
    except Exception as exc:
        return _failed(receiver, event, exc)
    return OK


def _failed(receiver: Receiver, event: Event, exc: Exception) -> Outcome:
    # redacted, traceback included, by signalbus.redaction.LogFilter on this logger
    log.error("receiver %s failed on %s event %s (attempt %d)",
              receiver.name, event.signal, event.id, event.attempt, exc_info=True)
    report_error(receiver, event, exc)
    return Outcome("error", exc)


def deliver_one(target: Target, sender: Any, event: Event,
                receivers: Sequence[Receiver] | None = None,
                ) -> list[tuple[Receiver, BaseException]]:
    """Run every receiver of ``event`` in order, logging and collecting their exceptions.

    ``receivers`` defaults to the target's receivers of the event's signal and sender.
    """
    if observers:
        notify(sender, event)
    failures: list[tuple[Receiver, BaseException]] = []
    if receivers is None:
        receivers = target.receivers_for(event.signal, sender)
    for receiver in receivers:
        outcome = run_receiver(receiver, sender, event)
        if outcome.error is not None:
            failures.append((receiver, outcome.error))
    return failures


class _Item:
    __slots__ = ("chain", "depth", "event", "sender", "target")

    def __init__(self, target: Target, sender: Any, event: Event, depth: int,
                 chain: tuple[str, ...]) -> None:
        self.target = target
        self.sender = sender
        self.event = event
        self.depth = depth
        self.chain = chain


class _Local(threading.local):
    def __init__(self) -> None:
        self.queue: collections.deque[_Item] = collections.deque()
        self.running = False
        self.current: _Item | None = None


_local = _Local()


def run_inline(target: Target, events: Iterable[Outgoing]) -> None:
    """Deliver ``events`` now in this thread, breadth-first across nested commits."""
    local = _local
    current = local.current
    depth = current.depth + 1 if current is not None else 0
    chain = (*current.chain, current.event.signal) if current is not None else ()
    for sender, event in events:
        if depth > target.max_depth:
            path = " -> ".join((*chain[-6:], event.signal))
            exc = ReceiverCycle(
                f"signalbus stopped delivering {event.signal!r} event {event.id}: receivers "
                f"re-triggered signals {depth} levels deep ({path}). This looks like a cycle "
                "of receivers committing changes that send each other's signals; break it, "
                "or raise SIGNALBUS_MAX_DEPTH if the chain is meant to be that long."
            )
            log.error("%s", exc, extra={"event_id": event.id, "signal": event.signal})
            report_error(None, event, exc)
            continue
        local.queue.append(_Item(target, sender, event, depth, chain))
    if local.running:
        return  # the outer loop delivers them after the events already queued
    local.running = True
    # The receivers of one (bus, signal, sender), looked up once per run: like blinker's
    # send, a receiver connected while events are being delivered applies from the next
    # commit on.
    memo: dict[tuple[int, str, Any], Sequence[Receiver]] = {}
    try:
        while local.queue:
            item = local.queue.popleft()
            local.current = item
            key = (id(item.target), item.event.signal, item.sender)
            receivers = memo.get(key)
            if receivers is None:
                receivers = memo[key] = item.target.receivers_for(item.event.signal,
                                                                  item.sender)
            try:
                deliver_one(item.target, item.sender, item.event, receivers)
            finally:
                local.current = None
    finally:
        local.running = False
        local.queue.clear()


class Inline:
    """``SIGNALBUS_DELIVERY = "inline"``: receivers run right after the commit."""

    name = "inline"
    prepares = False

    def __init__(self, target: Target) -> None:
        self.target = target

    def prepare(self, session: Session, events: list[Outgoing]) -> None:
        raise AssertionError("inline delivery stores nothing")

    def committed(self, events: list[Outgoing]) -> None:
        run_inline(self.target, events)

    def emit(self, sender: Any, event: Event) -> None:
        run_inline(self.target, [(sender, event)])
