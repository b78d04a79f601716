"""Capture: SQLAlchemy listeners that turn flushed row changes into events.

Data flows one way. Mapper listeners (installed only on the class hierarchies that have
a binding, so unbound models cost nothing) note which rows a flush wrote; the
session's ``after_flush`` snapshots them into the buffer (:class:`Frame`) of the
innermost real transaction, coalescing repeated changes of a row. A released SAVEPOINT
merges its frame into its parent's; a rolled-back one is dropped. When the root
transaction commits, the frame becomes a list of :class:`~signalbus.Event` that is
handed to the :class:`Sink` (the bus), which delivers them. Capture knows nothing of
delivery modes; it only offers the sink a ``prepare`` call inside the transaction,
right before the database commit, for sinks that store events (the outbox).

Only session/mapper event APIs are used; the per-session state lives in
``session.info``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import InstanceState, Mapper, Session, scoped_session, sessionmaker
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.session import SessionTransaction

from . import muting
from .bindings import Binding, qualified_name, registry
from .conditions import RowView
from .errors import BindingError, ConfigurationError, UnserialisableValue
from .events import _SCALARS, EMPTY, Event, FrozenDict, Outgoing, normalise

__all__ = ["Frame", "Sink", "attach_session", "emit_into"]

log = logging.getLogger("signalbus")

KEY = "_signalbus"

class Sink(Protocol):
    """What capture hands committed events to (implemented by the bus)."""

    redact: tuple[str, ...]
    muted: frozenset[str]
    prepares: bool
    """Whether :meth:`prepare` must run inside the transaction before it commits."""

    def prepare(self, session: Session, events: list[Outgoing]) -> None: ...

    def committed(self, events: list[Outgoing]) -> None: ...

    def run_flush_phase(self, sender: type[Any], event: Event) -> None: ...


Resolver = Callable[[Session], "Sink | None"]


# -- plans: what to capture for one (class, op, phase) -----------------------------------


@dataclasses.dataclass(frozen=True)
class BindingPlan:
    binding: Binding
    payload: tuple[str, ...]
    """Attributes put into ``data``: fields/exclude applied, redacted ones removed."""
    payload_set: frozenset[str]
    visible: frozenset[str]
    """Attributes whose change triggers an update binding without ``when=``."""


@dataclasses.dataclass(frozen=True)
class Plan:
    bindings: tuple[BindingPlan, ...]
    capture: tuple[str, ...]
    """Attributes normalised into the row's data (union of the payloads)."""
    raw: tuple[str, ...]
    """Attributes whose Python values conditions read."""
    columns: frozenset[str]
    pk_keys: tuple[str, ...]
    root: type[Any]


_EMPTY_PLAN = Plan((), (), (), frozenset(), (), object)
_plans: dict[tuple[type[Any], str, str, tuple[str, ...]], Plan] = {}
_plans_version = -1
_lock = threading.RLock()
_installed: set[tuple[type[Any], str]] = set()
_synced_version = -1


def _redacted(name: str, redact: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return any(pattern in lowered for pattern in redact)


def plan_for(cls: type[Any], op: str, phase: str, redact: tuple[str, ...]) -> Plan:
    """The (cached) capture plan of ``op`` on ``cls`` rows for one redaction setting."""
    global _plans_version
    if _plans_version != registry.version:
        with _lock:
            _plans.clear()
            _plans_version = registry.version
    key = (cls, op, phase, redact)
    plan = _plans.get(key)
    if plan is None:
        plan = _build_plan(cls, op, phase, redact)
        _plans[key] = plan
    return plan


def _build_plan(cls: type[Any], op: str, phase: str, redact: tuple[str, ...]) -> Plan:
    matching = [
        b
        for b in registry.bindings
        if b.cls is not None and b.op == op and b.phase == phase and issubclass(cls, b.cls)
    ]
    if not matching:
        return _EMPTY_PLAN
    mapper: Mapper[Any] = sa_inspect(cls)
    columns = [prop.key for prop in mapper.column_attrs]
    column_set = frozenset(columns)
    plans = []
    capture: dict[str, None] = {}
    raw: dict[str, None] = {}
    for b in matching:
        for named, what in ((b.fields, "fields"), (b.exclude, "exclude")):
            unknown = sorted((named or frozenset()) - column_set)
            if unknown:
                raise BindingError(
                    f"{b.describe()}: {cls.__qualname__} has no column attribute "
                    f"{', '.join(map(repr, unknown))} (in {what}=); its column attributes "
                    f"are {', '.join(columns)}."
                )
        visible = [c for c in columns if (b.fields is None or c in b.fields)
                   and c not in b.exclude]
        payload = tuple(c for c in visible
                        if (b.fields is not None and c in b.fields) or not _redacted(c, redact))
        plans.append(BindingPlan(b, payload, frozenset(payload), frozenset(visible)))
        capture.update(dict.fromkeys(payload))
        if b.when is not None:
            raw.update(dict.fromkeys(columns if b.when.fields is None else
                                     [c for c in columns if c in b.when.fields]))
    pk_keys = tuple(mapper.get_property_by_column(col).key for col in mapper.primary_key)
    return Plan(tuple(plans), tuple(capture), tuple(raw), column_set, pk_keys,
                mapper.base_mapper.class_)


def sync_bindings() -> None:
    """Resolve string models and install listeners for bindings added since last time.

    Raises :class:`BindingError` naming a ``"pkg.module:Class"`` string that does not
    resolve, or a class that is not mapped.
    """
    global _synced_version
    if _synced_version == registry.version:
        return
    with _lock:
        if registry.pending():
            registry.resolve_all()
        for binding in registry.bindings:
            assert binding.cls is not None
            mapper = sa_inspect(binding.cls, raiseerr=False)
            if not isinstance(mapper, Mapper):
                raise BindingError(
                    f"{binding.describe()}: {qualified_name(binding.cls)} is not a mapped "
                    "class. Bind an SQLAlchemy model."
                )
            _install(mapper, binding)
        _synced_version = registry.version


def _install(mapper: Mapper[Any], binding: Binding) -> None:
    root = mapper.base_mapper.class_
    name = _LISTENER_FOR[binding.phase, binding.op]
    if (root, name) not in _installed:
        # One listener per class hierarchy and mapper event (propagate=True covers
        # subclasses; per bound class would fire twice for a subclass of a bound base),
        # and only the events some binding needs: an insert binding costs updates nothing.
        sa_event.listen(root, name, _MAPPER_LISTENERS[name], raw=True, propagate=True)
        _installed.add((root, name))
    if binding.op == "update":
        # Old values must be the committed ones even when the attribute was expired
        # (expire_on_commit): active history loads the old value when it is set.
        for prop in mapper.column_attrs:
            attr = getattr(binding.cls, prop.key)
            if not getattr(attr.impl, "active_history", False):
                sa_event.listen(attr, "set", _noop_set, active_history=True, propagate=True)


def _noop_set(target: Any, value: Any, oldvalue: Any, initiator: Any) -> None:
    return None


# -- row records and frames ----------------------------------------------------------


class RowChange:
    """The net change of one row inside one transaction frame."""

    __slots__ = ("cls", "data", "key", "muted", "occurred_at", "old", "op", "pk", "raw")

    def __init__(
        self,
        cls: type[Any],
        key: tuple[Any, ...],
        op: str,
        pk: tuple[Any, ...],
        data: dict[str, Any],
        raw: dict[str, Any],
        old: dict[str, Any],
        occurred_at: dt.datetime,
        muted: frozenset[str],
    ) -> None:
        self.cls = cls
        self.key = key
        self.op = op
        self.pk = pk
        self.data = data
        """Normalised values of the captured attributes."""
        self.raw = raw
        """Python values read by conditions (and, for updates, of changed attributes)."""
        self.old = old
        """Updates: Python value before the transaction of each attribute that changed."""
        self.occurred_at = occurred_at
        self.muted = muted


class Emitted:
    """An :func:`signalbus.emit` event waiting in a transaction frame."""

    __slots__ = ("event", "key", "sender")

    def __init__(self, sender: Any, event: Event) -> None:
        self.sender = sender
        self.event = event
        self.key = event.id


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an exotic type whose == is not a bool (arrays)
        return a is b


def merge(prev: RowChange, nxt: RowChange) -> RowChange | None:
    """Coalesce two changes of one row; ``None`` when they cancel out."""
    muted = prev.muted | nxt.muted
    if prev.op == "insert":
        if nxt.op == "delete":
            return None
        # insert then update: one insert with the final values
        return RowChange(prev.cls, prev.key, "insert", nxt.pk, nxt.data,
                         {**prev.raw, **nxt.raw}, {}, prev.occurred_at, muted)
    if prev.op == "update":
        if nxt.op == "delete":
            return RowChange(nxt.cls, prev.key, "delete", nxt.pk, nxt.data, nxt.raw, {},
                             prev.occurred_at, muted)
        raw = {**prev.raw, **nxt.raw}
        old = dict(prev.old)
        for k, v in nxt.old.items():
            old.setdefault(k, v)
        # a value changed and changed back is no change
        old = {k: v for k, v in old.items() if not _same(v, raw.get(k))}
        return RowChange(nxt.cls, prev.key, "update", nxt.pk, nxt.data, raw, old,
                         prev.occurred_at, muted)
    if prev.op == "delete" and nxt.op == "insert":
        # a delete followed by an insert of the same key is an update
        old = {k: prev.raw.get(k) for k, v in nxt.data.items()
               if k in prev.data and not _same(prev.data[k], v)}
        raw = {**nxt.raw}
        return RowChange(nxt.cls, prev.key, "update", nxt.pk, nxt.data, raw, old,
                         prev.occurred_at, muted)
    raise AssertionError(f"impossible sequence {prev.op} then {nxt.op} for one row")


class Frame:
    """The events buffered for one real transaction (the root, or one SAVEPOINT)."""

    __slots__ = ("committed", "entries", "prepared", "sink")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.entries: dict[Any, RowChange | Emitted] = {}
        self.committed = False
        self.prepared: list[Outgoing] | None = None

    def add(self, entry: RowChange | Emitted) -> None:
        prev = self.entries.get(entry.key)
        if prev is None:
            self.entries[entry.key] = entry
            return
        assert isinstance(prev, RowChange) and isinstance(entry, RowChange)
        merged = merge(prev, entry)
        if merged is None:
            del self.entries[entry.key]
        else:
            self.entries[entry.key] = merged

    def absorb(self, child: Frame) -> None:
        for entry in child.entries.values():
            self.add(entry)

    def build(self) -> list[Outgoing]:
        """The events of this frame, in the order rows were first changed."""
        out: list[Outgoing] = []
        ids = _ids(len(self.entries) * 2)
        redact = self.sink.redact
        for entry in self.entries.values():
            if isinstance(entry, Emitted):
                out.append((entry.sender, entry.event))
                continue
            plan = plan_for(entry.cls, entry.op, "commit", redact)
            _row_events(entry, plan, ids, out)
        return out


def _ids(n: int) -> list[str]:
    """``n`` random (version 4) UUID strings, from one ``urandom`` call."""
    h = os.urandom(16 * max(n, 1)).hex()
    variant = "89ab"
    return [
        f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-"
        f"{variant[int(h[i + 16], 16) & 3]}{h[i + 17:i + 20]}-{h[i + 20:i + 32]}"
        for i in range(0, len(h), 32)
    ]


def _row_events(rc: RowChange, plan: Plan, ids: list[str], out: list[Outgoing]) -> None:
    changed = rc.old.keys()
    if rc.op == "update" and not changed:
        return  # an update whose net change is empty sends nothing
    view: RowView | None = None
    model = qualified_name(rc.cls)
    if len(rc.pk) == 1:
        value = rc.pk[0]
        convert = _SCALARS.get(type(value))
        pk = convert(value) if convert is not None else normalise(value)
    else:
        pk = normalise(rc.pk)
    data_all = rc.data
    for bp in plan.bindings:
        b = bp.binding
        if b.signal in rc.muted:
            continue
        if b.when is not None:
            if view is None:
                view = RowView(rc.op, rc.raw, rc.old)
            if not b.when(view):
                continue
        elif rc.op == "update" and not any(k in bp.visible for k in changed):
            continue
        if bp.payload == plan.capture and len(data_all) == len(bp.payload):
            data = FrozenDict(data_all)  # the common case: one binding takes every column
        else:
            data = FrozenDict({k: data_all[k] for k in bp.payload if k in data_all})
        if rc.op == "update":
            changes = FrozenDict({
                k: (normalise(rc.old[k]), data_all.get(k))
                for k in changed if k in bp.payload_set
            })
        else:
            changes = EMPTY
        out.append((rc.cls, Event(
            id=ids.pop() if ids else str(uuid.uuid4()),
            signal=b.signal,
            model=model,
            op=rc.op,
            pk=pk,
            data=data,
            changes=changes,
            occurred_at=rc.occurred_at,
            source="orm",
        )))


# -- per-session state ---------------------------------------------------------------


class SessionState:
    """Lives in ``session.info``: the flush log and the frames of open transactions."""

    __slots__ = ("flush_log", "flushing", "frames", "sink", "tracker")

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.frames: dict[SessionTransaction, Frame] = {}
        self.flush_log: list[tuple[str, InstanceState[Any], RowChange | None]] = []
        self.flushing = False
        self.sink: Sink | None = None

    def frame(self, session: Session, sink: Sink) -> Frame:
        trans = session.get_nested_transaction() or session.get_transaction()
        assert trans is not None
        frame = self.frames.get(trans)
        if frame is None:
            root = session.get_transaction()
            root_frame = self.frames.get(root) if root is not None else None
            frame = Frame(root_frame.sink if root_frame is not None else sink)
            self.frames[trans] = frame
        return frame


def _state_of(session: Session) -> SessionState | None:
    st: SessionState | None = session.info.get(KEY)
    if st is None:
        tracker = Tracker.of(session)
        if tracker is None:
            return None
        st = session.info[KEY] = SessionState(tracker)
    return st


def _flush_state(state: InstanceState[Any]) -> SessionState | None:
    session = state.session
    if session is None:
        return None
    st: SessionState | None = session.info.get(KEY)
    if st is None or not st.flushing:
        return None
    return st


def _value(state: InstanceState[Any], key: str) -> Any:
    d = state.dict
    if key in d:
        return d[key]
    # expired or deferred (a server-side value not returned by RETURNING): load it
    return getattr(state.obj(), key)


def _normalised(cls: type[Any], values: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, value in values:
        try:
            out[key] = normalise(value)
        except TypeError as exc:
            column = sa_inspect(cls).column_attrs[key].columns[0]
            raise UnserialisableValue(
                f"signalbus cannot put {cls.__qualname__}.{key} (column type "
                f"{column.type!r}) into an event: {exc}. Leave it out with "
                f"bind(..., exclude=[{key!r}]) or list the wanted attributes in fields=, "
                "or store it in a JSON-compatible column type."
            ) from None
    return out


def _snapshot(state: InstanceState[Any], op: str, plan: Plan, now: dt.datetime,
              muted: frozenset[str]) -> RowChange:
    cls = state.class_
    d = state.dict
    values = [(k, d[k] if k in d else _value(state, k)) for k in plan.capture]
    try:
        # the common case in one pass; _normalised names the column when one fails
        data = {k: _SCALARS[type(v)](v) for k, v in values}
    except (KeyError, TypeError):
        data = _normalised(cls, values)
    if op == "delete":
        # keep every column: a delete followed by an insert of the key becomes an update
        raw = dict(values)
        for k in plan.columns:
            if k not in raw:
                raw[k] = _value(state, k)
    elif plan.raw:
        raw = {k: d[k] if k in d else _value(state, k) for k in plan.raw}
    else:
        raw = {}
    old: dict[str, Any] = {}
    if op == "update":
        # committed_state holds each changed attribute's value from before it was set
        # (loaded by active history when it had expired): the scalar history, without
        # building state.attrs (an AttributeState per attribute, per row)
        columns = plan.columns
        for key, original in state.committed_state.items():
            if key not in columns or key not in d:
                continue
            new = d[key]
            if original is NO_VALUE:
                original = None
            elif _same(original, new):
                continue  # set back to the value it had: no change
            old[key] = original
            raw[key] = new
    pk = tuple(d[k] if k in d else _value(state, k) for k in plan.pk_keys)
    return RowChange(cls, (plan.root, pk), op, pk, data, raw, old, now, muted)


def _muted_for(plan: Plan, names: frozenset[str]) -> frozenset[str] | None:
    """Which of the plan's signals are muted; ``None`` when all of them are."""
    if not names:
        return frozenset()
    hits = frozenset(bp.binding.signal for bp in plan.bindings
                     if muting.is_muted(bp.binding.signal, names))
    if len(hits) == len({bp.binding.signal for bp in plan.bindings}):
        return None
    return hits


# mapper listeners (installed per bound class hierarchy) --------------------------------


def _after_insert(mapper: Mapper[Any], connection: Any, state: InstanceState[Any]) -> None:
    st = _flush_state(state)
    if st is not None:
        st.flush_log.append(("insert", state, None))


def _after_update(mapper: Mapper[Any], connection: Any, state: InstanceState[Any]) -> None:
    st = _flush_state(state)
    if st is not None:
        st.flush_log.append(("update", state, None))


def _before_delete(mapper: Mapper[Any], connection: Any, state: InstanceState[Any]) -> None:
    st = _flush_state(state)
    if st is None:
        return
    _run_flush_phase(st, state, "delete")
    assert st.sink is not None
    plan = plan_for(state.class_, "delete", "commit", st.sink.redact)
    if plan.bindings:
        muted = _muted_for(plan, muting.active(st.sink.muted))
        if muted is not None:
            # the row is about to go: take its values now
            now = dt.datetime.now(dt.UTC)
            st.flush_log.append(("delete", state, _snapshot(state, "delete", plan, now, muted)))


def _before_insert(mapper: Mapper[Any], connection: Any, state: InstanceState[Any]) -> None:
    st = _flush_state(state)
    if st is not None:
        _run_flush_phase(st, state, "insert")


def _before_update(mapper: Mapper[Any], connection: Any, state: InstanceState[Any]) -> None:
    st = _flush_state(state)
    if st is not None:
        _run_flush_phase(st, state, "update")


def _run_flush_phase(st: SessionState, state: InstanceState[Any], op: str) -> None:
    sink = st.sink
    assert sink is not None
    plan = plan_for(state.class_, op, "flush", sink.redact)
    if not plan.bindings:
        return
    muted = _muted_for(plan, muting.active(sink.muted))
    if muted is None:
        return
    rc = _snapshot(state, op, plan, dt.datetime.now(dt.UTC), muted)
    out: list[Outgoing] = []
    if op == "insert":
        # pk is usually unknown before the insert
        rc.pk = tuple(state.dict.get(k) for k in plan.pk_keys)
    _row_events(rc, plan, [], out)
    for sender, ev in out:
        sink.run_flush_phase(sender, dataclasses.replace(ev, instance=state.obj()))


_LISTENER_FOR = {
    ("commit", "insert"): "after_insert",
    ("commit", "update"): "after_update",
    ("commit", "delete"): "before_delete",  # the row's values must be read before it goes
    ("flush", "insert"): "before_insert",
    ("flush", "update"): "before_update",
    ("flush", "delete"): "before_delete",
}

_MAPPER_LISTENERS: dict[str, Callable[..., None]] = {
    "before_insert": _before_insert,
    "before_update": _before_update,
    "before_delete": _before_delete,
    "after_insert": _after_insert,
    "after_update": _after_update,
}


# -- session listeners -----------------------------------------------------------------


class Tracker:
    """The listeners of one attached session factory (or session)."""

    _by_target: weakref.WeakKeyDictionary[Any, Tracker] = weakref.WeakKeyDictionary()

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve

    @classmethod
    def of(cls, session: Session) -> Tracker | None:
        """The tracker listening on ``session`` (or on its class), if any."""
        found = cls._by_target.get(session)
        if found is not None:
            return found
        for klass in type(session).__mro__:
            found = cls._by_target.get(klass)
            if found is not None:
                return found
        return None

    def listen(self, target: Any, key: Any) -> None:
        for name in ("before_flush", "after_flush", "before_commit", "after_commit",
                     "after_transaction_end"):
            sa_event.listen(target, name, getattr(self, "_" + name))
        Tracker._by_target[key] = self

    def _state(self, session: Session) -> SessionState:
        st: SessionState | None = session.info.get(KEY)
        if st is None:
            st = session.info[KEY] = SessionState(self)
        return st

    def _before_flush(self, session: Session, flush_context: Any, instances: Any) -> None:
        sync_bindings()
        st = self._state(session)
        root = session.get_transaction()
        root_frame = st.frames.get(root) if root is not None else None
        st.sink = root_frame.sink if root_frame is not None else self.resolve(session)
        st.flushing = st.sink is not None
        st.flush_log = []

    def _after_flush(self, session: Session, flush_context: Any) -> None:
        st: SessionState | None = session.info.get(KEY)
        if st is None or not st.flushing:
            return
        st.flushing = False
        entries, st.flush_log = st.flush_log, []
        sink = st.sink
        if not entries or sink is None:
            return
        # within one flush: inserts in add() order, then the unit of work's order
        inserts = sorted((e for e in entries if e[0] == "insert"),
                         key=lambda e: e[1].insert_order or 0)
        others = [e for e in entries if e[0] != "insert"]
        frame = st.frame(session, sink)
        now = dt.datetime.now(dt.UTC)
        names = muting.active(sink.muted)
        redact = sink.redact
        for op, state, ready in (*inserts, *others):
            if ready is not None:
                frame.add(ready)
                continue
            plan = plan_for(state.class_, op, "commit", redact)
            if not plan.bindings:
                continue
            muted = _muted_for(plan, names)
            if muted is None:
                continue
            frame.add(_snapshot(state, op, plan, now, muted))

    def _before_commit(self, session: Session) -> None:
        if session.get_nested_transaction() is not None:
            return
        st: SessionState | None = session.info.get(KEY)
        root = session.get_transaction()
        frame = st.frames.get(root) if st is not None and root is not None else None
        # no frame yet: the commit's own flush may be the first of the transaction
        sink = frame.sink if frame is not None else self.resolve(session)
        if sink is None or not sink.prepares:
            return
        # the commit's own final flush has not run yet: run it, so that the events
        # stored with this transaction are complete
        session.flush()
        st = session.info.get(KEY)
        frame = st.frames.get(root) if st is not None else None
        if frame is None:
            return
        frame.prepared = frame.build()
        if frame.prepared:
            frame.sink.prepare(session, frame.prepared)

    def _after_commit(self, session: Session) -> None:
        st: SessionState | None = session.info.get(KEY)
        if st is None or not st.frames:
            return
        trans = session.get_nested_transaction() or session.get_transaction()
        frame = st.frames.get(trans)  # type: ignore[arg-type]
        if frame is not None:
            frame.committed = True

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        st: SessionState | None = session.info.get(KEY)
        if st is None:
            return
        frame = st.frames.pop(transaction, None)
        if frame is None or not frame.committed:
            return  # nothing captured, or rolled back: its events are dropped
        parent = transaction.parent
        if transaction.nested:
            # a released SAVEPOINT: its events wait for the root commit
            while parent is not None and not (parent.nested or parent.parent is None):
                parent = parent.parent
            assert parent is not None
            target = st.frames.get(parent)
            if target is None:
                target = st.frames[parent] = Frame(frame.sink)
            target.absorb(frame)
            return
        events = frame.prepared if frame.prepared is not None else frame.build()
        if events:
            frame.sink.committed(events)


def _event_target(target: Any) -> tuple[Any, Any]:
    """The object SQLAlchemy listens on for ``target``, and the key to find it again."""
    try:
        from sqlalchemy.ext.asyncio import (
            AsyncSession,
            async_scoped_session,
            async_sessionmaker,
        )
    except ImportError:  # pragma: no cover - greenlet missing
        AsyncSession = async_sessionmaker = async_scoped_session = ()  # type: ignore[assignment,misc]
    if isinstance(target, scoped_session):
        target = target.session_factory
    if isinstance(target, async_scoped_session):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        return target, target.class_
    if isinstance(target, Session):
        return target, target
    if isinstance(target, AsyncSession):
        return target.sync_session, target.sync_session
    if isinstance(target, async_sessionmaker):
        base = target.kw.get("sync_session_class") or Session
        # A subclass of its own, so that only sessions of this factory are listened to.
        sub = type(f"SignalBus{base.__name__}", (base,), {})
        target.kw["sync_session_class"] = sub
        return sub, sub
    raise ConfigurationError(
        f"signalbus cannot attach to {target!r}: pass a sessionmaker, scoped_session, "
        "Session, async_sessionmaker, async_scoped_session or AsyncSession."
    )


_attach_lock = threading.Lock()


def attach_session(target: Any, resolve: Resolver) -> bool:
    """Listen on ``target``; returns ``False`` when it was already attached.

    A target is wired once; later calls keep the first resolver, which is what lets one
    Flask-SQLAlchemy ``db`` serve many apps (its resolver looks up the current app).
    """
    with _attach_lock:
        listen_on, key = _event_target(target)
        if key in Tracker._by_target:
            return False
        Tracker(resolve).listen(listen_on, key)
        return True


def session_state(session: Session) -> SessionState:
    """The capture state of an attached session; an error names the fix otherwise."""
    st = _state_of(session)
    if st is None:
        raise ConfigurationError(
            "emit(..., session=...) was given a session that no bus is attached to: "
            "call signalbus.attach(...) on its factory, or init_app(app, db=db)."
        )
    return st


def emit_into(session: Session, sender: Any, event: Event, sink: Sink) -> None:
    """Add an emitted event to ``session``'s current transaction, beginning one if needed."""
    st = session_state(session)
    if not session.in_transaction():
        session.begin()
    st.frame(session, sink).add(Emitted(sender, event))
