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
           "loaded", "run_receiver", "run_receivers", "settled"]

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
    """What one run of a receiver came to (see :func:`run_receivers`)."""

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
    """Run one receiver and classify how it ended (see :func:`run_receivers`)."""
    failed = run_receivers((receiver,), sender, event, retries=retries, propagate=propagate)
    return failed[0][1] if failed else OK


def run_receivers(receivers: Sequence[Receiver], sender: Any, event: Event, *,
                  retries: bool = False, propagate: bool = False,
                  running: logs.Running | None = None) -> list[tuple[Receiver, Outcome]]:
    """Run ``receivers`` on ``event`` in order and classify how each run that failed
    ended: the one place receivers are called (inline delivery, the flush phase, the
    worker). Returns the receivers that failed, with their :class:`Outcome` (the others
    ended ``ok``).

    Exception contract: an ``Exception`` never propagates; it is logged to the
    ``signalbus`` logger (with the event id; a traceback unless the receiver said
    ``Retry`` or ``Permanent``), reported to :data:`error_hooks` (the test plugin) unless
    it is a ``Retry`` the caller will honour, and returned as an :class:`Outcome`; the
    next receiver runs. ``retries`` says whether the caller retries and gives up (the
    outbox worker); where it does not (inline delivery), ``Retry`` and ``Permanent`` are
    errors like any other. With ``propagate`` (the flush phase) the exception propagates
    untouched and aborts the flush, as an exception in Django's ``pre_save`` does.

    While a receiver runs, :data:`signalbus.logs.current` names it and its event.
    ``running``: the record the caller has set in :data:`signalbus.logs.current` for a
    run of many events (inline delivery); it is cleared when the receivers are done.
    """
    if propagate:
        for receiver in receivers:
            receiver.fn(sender, event=event)
        return []
    if running is None:
        return _run_in_record(receivers, sender, event, retries)
    return _run(receivers, sender, event, retries, running)


def _run(receivers: Sequence[Receiver], sender: Any, event: Event, retries: bool,
         running: logs.Running) -> list[tuple[Receiver, Outcome]]:
    """:func:`run_receivers` with a record set up: the loop that calls the receivers.
    Inline delivery calls it once per event, with positional arguments (a keyword call
    costs more)."""
    running.event = event
    try:
        if instruments:
            return [(receiver, outcome) for receiver in receivers
                    if not (outcome := _instrumented(receiver, sender, event, retries,
                                                     running)).ok]
        failed = []
        for receiver in receivers:
            running.receiver = receiver
            try:
                receiver.fn(sender, event=event)
            except Exception as exc:
                failed.append((receiver, _classify(receiver, event, exc, retries)))
        return failed
    finally:
        running.event = running.receiver = None


def _run_in_record(receivers: Sequence[Receiver], sender: Any, event: Event,
                   retries: bool) -> list[tuple[Receiver, Outcome]]:
    """:func:`run_receivers` for a caller that set up no record for a whole run (the
    worker, one event at a time; a receiver run inside another's): a record of its own,
    or the current one, put back as it was after."""
    running = logs.current.get()
    if running is None:
        token = logs.current.set(logs.Running())
        try:
            return run_receivers(receivers, sender, event, retries=retries,
                                 running=logs.current.get())
        finally:
            logs.current.reset(token)
    before = running.event, running.receiver
    try:
        return run_receivers(receivers, sender, event, retries=retries, running=running)
    finally:
        running.event, running.receiver = before


def _instrumented(receiver: Receiver, sender: Any, event: Event, retries: bool,
                  running: logs.Running) -> Outcome:
    with contextlib.ExitStack() as stack:
        done = [stack.enter_context(i.run(receiver, sender, event)) for i in list(instruments)]
        running.event = event
        running.receiver = receiver
        try:
            receiver.fn(sender, event=event)
        except Exception as exc:
            outcome = _classify(receiver, event, exc, retries)
        else:
            outcome = OK
        for finish in done:
            finish(outcome)
    if outcome.ok:
        settled(event.signal, receiver.name, "delivered")
    elif not retries:  # inline: nothing retries it
        settled(event.signal, receiver.name, "dead")
    return outcome


def _classify(receiver: Receiver, event: Event, exc: Exception, retries: bool) -> Outcome:
    """The outcome of a receiver run that raised ``exc``; logs and reports it."""
    if isinstance(exc, Retry | Permanent) and retries:
        if isinstance(exc, Permanent):
            log.error("receiver %s gave up on %s event %s (attempt %d): %s",
                      receiver.name, event.signal, event.id, event.attempt, redact(str(exc)))
            report_error(receiver, event, exc)
            return Outcome("permanent", exc)
        log.info("receiver %s asked to retry %s event %s (attempt %d): %s",
                 receiver.name, event.signal, event.id, event.attempt, redact(str(exc)))
        return Outcome("retry", exc, exc.after)
    # inline, Retry and Permanent too: nothing to retry or give up on, an error like any
    # other; redacted, traceback included, by signalbus.redaction.LogFilter on this logger
    log.error("receiver %s failed on %s event %s (attempt %d)",
              receiver.name, event.signal, event.id, event.attempt, exc_info=exc)
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
    if receivers is None:
        receivers = target.receivers_for(event.signal, sender)
    return [(receiver, outcome.error) for receiver, outcome
            in run_receivers(receivers, sender, event) if outcome.error is not None]


class _Batch:
    """Events of one commit waiting in the inline queue, with the receiver chain that
    made them (empty for a commit outside any receiver)."""

    __slots__ = ("chain", "depth", "event", "events", "target")

    def __init__(self, target: Target, events: Iterable[Outgoing], depth: int,
                 chain: tuple[str, ...]) -> None:
        self.target = target
        self.events = events
        self.depth = depth
        self.chain = chain
        self.event: Event | None = None
        """The event whose receivers run now (kept here, not in the thread-local: a
        slot store costs a tenth of a ``threading.local`` one, once per event)."""


class _Local(threading.local):
    def __init__(self) -> None:
        self.queue: collections.deque[_Batch] = collections.deque()
        self.running = False
        self.batch: _Batch | None = None
        """The batch being delivered (its ``event``: the one whose receivers run now)."""


_local = _Local()


def run_inline(target: Target, events: Iterable[Outgoing]) -> None:
    """Deliver ``events`` now in this thread, breadth-first across nested commits.

    Events committed while receivers run (by a receiver) are queued behind those
    already queued, one batch per commit. ``events`` may be an iterator that makes each
    event when its turn comes: it is iterated as it is delivered when nothing else is
    being delivered, and taken in full at once otherwise (so that an error in making
    them is raised to the receiver's commit, as for any error of that commit).
    """
    local = _local
    if local.running:
        events = list(events)
    current = local.batch
    event = current.event if current is not None else None
    if current is not None and event is not None:
        batch = _Batch(target, events, current.depth + 1, (*current.chain, event.signal))
        if batch.depth > target.max_depth:
            _cut_off(batch)
            return
    else:
        batch = _Batch(target, events, 0, ())
    local.queue.append(batch)
    if local.running:
        return  # the outer loop delivers them after the events already queued
    local.running = True
    running = logs.Running()
    token = logs.current.set(running)
    try:
        _drain(local, running)
    finally:
        logs.current.reset(token)
        local.running = False
        local.batch = None
        local.queue.clear()


def _drain(local: _Local, running: logs.Running) -> None:
    # The receivers of one (bus, signal, sender), looked up once per run: like blinker's
    # send, a receiver connected while events are being delivered applies from the next
    # commit on. Consecutive events mostly share their signal and sender: the last
    # lookup is kept at hand.
    memo: dict[tuple[int, str, Any], Sequence[Receiver]] = {}
    queue = local.queue
    while queue:
        batch = local.batch = queue.popleft()
        target = batch.target
        last_signal: str | None = None
        last_sender: Any = None
        receivers: Sequence[Receiver] = ()
        for sender, event in batch.events:
            batch.event = event
            signal = event.signal
            if signal is not last_signal or sender is not last_sender:
                key = (id(target), signal, sender)
                found = memo.get(key)
                if found is None:
                    found = memo[key] = target.receivers_for(signal, sender)
                receivers, last_signal, last_sender = found, signal, sender
            if observers:
                notify(sender, event)
            if receivers:
                _run(receivers, sender, event, False, running)
        batch.event = None


def _cut_off(batch: _Batch) -> None:
    """Refuse the events of a batch past the depth limit, each with an error."""
    for _sender, event in batch.events:
        path = " -> ".join((*batch.chain[-6:], event.signal))
        exc = ReceiverCycle(
            f"signalbus stopped delivering {event.signal!r} event {event.id}: receivers "
            f"re-triggered signals {batch.depth} levels deep ({path}). This looks like a "
            "cycle of receivers committing changes that send each other's signals; break "
            "it, or raise SIGNALBUS_MAX_DEPTH if the chain is meant to be that long."
        )
        log.error("%s", exc, extra={"event_id": event.id, "signal": event.signal})
        report_error(None, event, exc)


class Inline:
    """``SIGNALBUS_DELIVERY = "inline"``: receivers run right after the commit."""

    name = "inline"
    prepares = False

    def __init__(self, target: Target) -> None:
        self.target = target

    def prepare(self, session: Session, events: list[Outgoing]) -> None:
        raise AssertionError("inline delivery stores nothing")

    def committed(self, events: Iterable[Outgoing]) -> None:
        run_inline(self.target, events)

    def emit(self, sender: Any, event: Event) -> None:
        run_inline(self.target, [(sender, event)])
