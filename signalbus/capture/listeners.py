"""Listeners: the SQLAlchemy hooks that feed row changes into transaction frames.

How a change travels:

1. ``before_flush`` (session) picks the sink (the bus runtime) for the transaction.
2. Mapper hooks note the rows the flush updated or deleted: ``after_update`` (with the
   pending objects a row switch writes as an UPDATE), ``before_delete`` (a deleted row's
   values must be read before it goes). Flush-phase bindings run in
   ``before_insert``/``before_update``/``before_delete``.
3. ``after_flush`` reads the inserted rows from the flush context, once per flush (the
   pending objects it wrote: no hook per inserted row), and snapshots them and the noted
   rows (:func:`snapshot`) into the frame of the innermost real transaction, where they
   merge with the rows' earlier changes.
4. ``after_transaction_end``: a released SAVEPOINT's frame merges into its parent's; a
   rolled-back one is dropped; the root's frame becomes events handed to the sink (for
   sinks that store events, ``before_commit`` builds and stores them first).

Lifetime of the listeners (as ``sqlalchemy.ext.mutable`` says of its own): the mapper
listeners are installed on the root class of each bound hierarchy, with
``propagate=True``, the first time a flush sees a new binding, and are **never
removed**: they live as long as the mapped class. They cost an unbound class nothing
(none is installed) and a bound class one dictionary lookup per row when no session
of a bus is flushing. Active history, turned on for the columns of classes with update
or delete bindings (:func:`_active_history`), stays too. Session listeners live on the
attached target (a ``sessionmaker``'s session class, a ``Session``, or a subclass made
for an ``async_sessionmaker``) as long as it does; :class:`Tracker` finds them again
through a weak dictionary, so an attached factory that is dropped takes its listeners
with it. Per-session state lives in ``session.info`` and goes with the session.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import (
    InstanceState,
    Mapper,
    ORMExecuteState,
    Session,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.session import SessionTransaction

from .. import muting
from ..bindings import Binding, qualified_name, registry
from ..contexts import current_context
from ..errors import BindingError, ConfigurationError
from ..events import Event, FrozenDict, Outgoing
from . import bulk, triggers
from .build import Ids, build_events, iter_events, row_events
from .frames import Emitted, Frame, RowChange
from .plans import EMPTY_PLAN, Plan, plans
from .snapshots import inserted, snapshot, updated

__all__ = ["Sink", "Tracker", "attach_session", "emit_into", "session_state",
           "sync_bindings"]

KEY = "_signalbus"

_SAVED = (False, False)
"""A state the flush saved (``UOWTransaction.states``: ``(isdelete, listonly)``)."""


class Sink(Protocol):
    """What capture hands committed events to (implemented by the bus runtime)."""

    redact: tuple[str, ...]
    muted: frozenset[str]
    prepares: bool
    """Whether :meth:`prepare` must run inside the transaction before it commits."""

    def prepare(self, session: Session, events: list[Outgoing]) -> None: ...

    def committed(self, events: Iterable[Outgoing]) -> None:
        """Hand over the events of a committed transaction (a list when they were
        prepared, else an iterator that makes each event as it is taken)."""

    def run_flush_phase(self, sender: type[Any], event: Event) -> None: ...


Resolver = Callable[[Session], "Sink | None"]


# -- installing the mapper listeners -------------------------------------------------------


class Installer:
    """Resolves bindings and installs the mapper listeners they need (never removed)."""

    def __init__(self) -> None:
        self._installed: set[tuple[type[Any], str]] = set()
        self._history: set[type[Any]] = set()
        self._version = -1
        self._lock = threading.RLock()

    def sync(self) -> None:
        """Resolve string models and install listeners for bindings added since last time.

        Raises :class:`BindingError` naming a ``"pkg.module:Class"`` string that does not
        resolve, or a class that is not mapped.
        """
        if self._version == registry.version:
            return
        with self._lock:
            if registry.pending():
                registry.resolve_all()
            for binding in registry.bindings:
                assert binding.cls is not None
                mapper = sa_inspect(binding.cls, raiseerr=False)
                if not isinstance(mapper, Mapper):
                    raise BindingError(
                        f"{binding.describe()}: {qualified_name(binding.cls)} is not a "
                        "mapped class. Bind an SQLAlchemy model."
                    )
                self._install(mapper, binding)
            self._version = registry.version

    def _listen(self, root: type[Any], name: str) -> None:
        if (root, name) not in self._installed:
            # one listener per class hierarchy and mapper event (propagate=True covers
            # subclasses; one per bound class would fire twice for a subclass of a
            # bound base)
            # raw and retval: SQLAlchemy calls the hook itself, with no wrapper of its
            # own (one call per row; what the hooks return is not read for these events)
            sa_event.listen(root, name, _MAPPER_LISTENERS[name], raw=True, retval=True,
                            propagate=True)
            self._installed.add((root, name))

    def _install(self, mapper: Mapper[Any], binding: Binding) -> None:
        if binding.capture == "trigger":
            return  # the database captures it (signalbus.capture.triggers)
        root = mapper.base_mapper.class_
        if binding.phase == "flush":
            self._listen(root, f"before_{binding.op}")
        else:
            # a row's changes coalesce whatever ops are bound: an insert binding needs
            # the updates after the insert, an update binding the delete and insert of
            # a key
            for name in ("after_update", "before_delete"):
                self._listen(root, name)
        if binding.op in ("update", "delete") and mapper.class_ not in self._history:
            # old values (and a deleted row's values) must be the committed ones even
            # when the attribute was expired before it was set: active history loads
            # the old value when it is set
            for prop in mapper.column_attrs:
                _active_history(mapper, prop.key)
            self._history.add(mapper.class_)


def _active_history(mapper: Mapper[Any], key: str) -> None:
    """Turn on active history for attribute ``key`` of ``mapper``'s class and subclasses.

    What ``listen(attr, "set", fn, active_history=True)`` turns on, without a listener:
    SQLAlchemy calls the ``set`` listeners of an attribute on every set (measured: 80
    bytecodes per row of an update), and signalbus needs none. The attribute's
    ``impl.active_history`` (the setting ``column_property(active_history=True)``
    makes) is set on the class and its mapped subclasses; a subclass mapped later copies
    it from its base. A SQLAlchemy without that setting gets the listener.
    """
    for sub in mapper.self_and_descendants:
        attr = getattr(sub.class_, key)
        impl = attr.impl
        if impl.active_history:
            continue
        if isinstance(getattr(type(impl), "active_history", None), property):
            impl.active_history = True
        else:  # pragma: no cover - a SQLAlchemy without the setting
            # raw, retval and include_key: SQLAlchemy calls the listener itself, with
            # no wrapper of its own around it (one call per attribute set)
            sa_event.listen(attr, "set", _noop_set, active_history=True, raw=True,
                            retval=True, include_key=True)


def _noop_set(state: Any, value: Any, oldvalue: Any, initiator: Any, **kw: Any) -> Any:
    return value


installer = Installer()


def sync_bindings() -> None:
    """Resolve pending bindings and install their listeners (see :class:`Installer`)."""
    installer.sync()


# -- per-session state ---------------------------------------------------------------


class SessionState:
    """Lives in ``session.info``: the flush log and the frames of open transactions."""

    __slots__ = ("flush_log", "flushing", "frames", "reload", "sink", "switched", "switching",
                 "tracker")

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.frames: dict[SessionTransaction, Frame] = {}
        self.flush_log: list[InstanceState[Any] | RowChange] = []
        """The rows of this flush, in the unit of work's order: updated objects' states,
        and deleted rows' changes (taken before the DELETE)."""
        self.flushing = False
        self.sink: Sink | None = None
        self.switched: dict[Any, RowChange] = {}
        """Deleted rows a new object of the same key replaces in this flush (SQLAlchemy
        turns the pair into one UPDATE, a "row switch"), snapshotted before it."""
        self.switching: set[InstanceState[Any]] = set()
        """The pending objects of this flush written as an UPDATE (a row switch)."""
        self.reload: list[tuple[InstanceState[Any], list[str]]] = []
        """Objects of a row switch whose unset attributes read ``None`` after the flush
        although the row kept its values: they are expired after the flush."""

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


class Flushes:
    """The sessions of a bus flushing now, by :attr:`Session.hash_key`, the key each of
    their objects' states carries as ``session_id``: a mapper hook finds the state of
    its row's session with one dictionary lookup (``state.session`` resolves a weak
    reference through SQLAlchemy's registry of sessions, per row)."""

    def __init__(self) -> None:
        self.active: dict[int, SessionState] = {}

    def begin(self, session: Session, st: SessionState) -> None:
        st.flushing = True
        self.active[session.hash_key] = st

    def end(self, session: Session, st: SessionState) -> None:
        """The flush ended (or failed: its transaction's end says so)."""
        st.flushing = False
        self.active.pop(session.hash_key, None)


flushes = Flushes()


def _flush_state(state: InstanceState[Any]) -> SessionState | None:
    return flushes.active.get(state.session_id)  # type: ignore[arg-type]


def _muted_for(plan: Plan, names: frozenset[str]) -> frozenset[str] | None:
    """Which of the plan's signals are muted; ``None`` when all of them are."""
    if not names:
        return frozenset()
    hits = frozenset(s for s in plan.signals if muting.is_muted(s, names))
    if len(hits) == len(plan.signals):
        return None
    return hits


def _plan_and_muting(cls: type[Any], redact: tuple[str, ...], names: frozenset[str]
                     ) -> tuple[Plan, frozenset[str] | None]:
    """The commit plan of ``cls`` and its muted signals (``None``: nothing to capture)."""
    plan = plans.commit(cls, redact)
    return plan, _muted_for(plan, names) if plan.bound else None


# -- mapper listeners (installed per bound class hierarchy) ----------------------------------


def _after_update(mapper: Mapper[Any], connection: Any, state: InstanceState[Any]) -> None:
    # (_flush_state written out: this hook runs for every updated row)
    st = flushes.active.get(state.session_id)  # type: ignore[arg-type]
    if st is not None:
        if state.key is not None:
            st.flush_log.append(state)
        else:
            # a pending object written as an UPDATE replaced a deleted row of its key
            st.switching.add(state)


def _before_delete(mapper: Mapper[Any], connection: Any, state: InstanceState[Any]) -> None:
    st = _flush_state(state)
    if st is None:
        return
    assert st.sink is not None
    _run_flush_phase(st, state, "delete")
    plan = plans.commit(state.class_, st.sink.redact)
    if plan.bound:
        muted = _muted_for(plan, muting.active(st.sink.muted))
        if muted is not None:
            # the row is about to go: take its values now
            now = dt.datetime.now(dt.UTC)
            st.flush_log.append(snapshot(state, "delete", plan, now, muted))


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
    plan = plans.flush(state.class_, op, sink.redact)
    if not plan.bound:
        return
    muted = _muted_for(plan, muting.active(sink.muted))
    if muted is None:
        return
    rc = snapshot(state, op, plan, dt.datetime.now(dt.UTC), muted, context=current_context())
    out: list[Outgoing] = []
    row_events(rc, plan.by_op.get(op, ()), Ids(), out)
    for sender, ev in out:
        sink.run_flush_phase(sender, dataclasses.replace(ev, instance=state.obj()))


_MAPPER_LISTENERS: dict[str, Callable[..., None]] = {
    "before_insert": _before_insert,
    "before_update": _before_update,
    "before_delete": _before_delete,
    "after_update": _after_update,
}


# -- session listeners -----------------------------------------------------------------


class Tracker:
    """The session listeners of one attached session factory (or session)."""

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
        for name in ("before_flush", "after_flush", "after_flush_postexec", "before_commit",
                     "after_commit", "after_transaction_end", "do_orm_execute"):
            sa_event.listen(target, name, getattr(self, "_" + name))
        Tracker._by_target[key] = self

    def _state(self, session: Session) -> SessionState:
        st: SessionState | None = session.info.get(KEY)
        if st is None:
            st = session.info[KEY] = SessionState(self)
        return st

    def _do_orm_execute(self, orm_state: ORMExecuteState) -> Any:
        if orm_state.is_select or not (orm_state.is_update or orm_state.is_insert
                                       or orm_state.is_delete):
            return None
        sync_bindings()
        triggers.sharing.apply(orm_state.session)
        return bulk.execute(orm_state, self)

    def bulk_sink(self, session: Session) -> Sink | None:
        """The sink of ``session``'s transaction (for :mod:`.bulk`)."""
        st = self._state(session)
        root = session.get_transaction()
        root_frame = st.frames.get(root) if root is not None else None
        return root_frame.sink if root_frame is not None else self.resolve(session)

    def bulk_frame(self, session: Session, sink: Sink) -> Frame:
        """The frame of ``session``'s innermost real transaction (for :mod:`.bulk`)."""
        return self._state(session).frame(session, sink)

    def _before_flush(self, session: Session, flush_context: Any, instances: Any) -> None:
        sync_bindings()
        st = self._state(session)
        root = session.get_transaction()
        root_frame = st.frames.get(root) if root is not None else None
        st.sink = root_frame.sink if root_frame is not None else self.resolve(session)
        if st.sink is not None:
            flushes.begin(session, st)
        elif st.flushing:
            flushes.end(session, st)
        # (what a failed flush left is dropped)
        st.flush_log = []
        if st.switching or st.switched:
            st.switching = set()
            st.switched = {}
        triggers.sharing.apply(session)
        if st.flushing and session._new and session._deleted:
            self._note_switches(st, session)

    def _note_switches(self, st: SessionState, session: Session) -> None:
        """Snapshot deleted rows that a new object of the same key will replace.

        SQLAlchemy writes such a pair as one UPDATE of the new object and never calls
        ``before_delete`` for the deleted one; its committed values are taken here,
        while the row still holds them.
        """
        assert st.sink is not None
        redact = st.sink.redact
        deleted: dict[Any, InstanceState[Any]] = {}
        for state in session._deleted:
            if state.key is not None and plans.commit(state.class_, redact).bound:
                deleted[state.key[0], tuple(state.key[1])] = state
        if not deleted:
            return
        names = muting.active(st.sink.muted)
        now = dt.datetime.now(dt.UTC)
        for state in session._new:
            plan = plans.commit(state.class_, redact)
            if not plan.bound:
                continue
            pk = tuple(state.dict.get(k) for k in plan.pk_keys)
            identity = (state.mapper._identity_class, pk)
            old = deleted.get(identity)
            if old is None:
                continue
            muted = _muted_for(plan, names)
            if muted is not None:
                st.switched[plan.root, pk] = snapshot(old, "delete", plan, now, muted)

    def _after_flush(self, session: Session, flush_context: Any) -> None:
        st: SessionState | None = session.info.get(KEY)
        if st is None or not st.flushing:
            return
        flushes.end(session, st)
        logged, st.flush_log = st.flush_log, []
        switched, st.switched = st.switched, {}
        switching = st.switching
        if switching:
            st.switching = set()
        sink = st.sink
        if sink is None:
            return
        names = muting.active(sink.muted)
        redact = sink.redact
        # plan and muting per class, once per flush (a flush writes many rows of a class;
        # the loops below ask again only when the class changes from one row to the next)
        per_class: dict[type[Any], tuple[Plan, frozenset[str] | None]] = {}

        def plan_of(cls: type[Any]) -> tuple[Plan, frozenset[str] | None]:
            known = per_class.get(cls)
            if known is None:
                known = per_class[cls] = _plan_and_muting(cls, redact, names)
            return known

        frame: Frame | None = None
        now = dt.datetime.now(dt.UTC)
        ctx = current_context()  # once per flush: the context of the flush's changes
        # Inserted rows first, in add() order: read here, once per flush, from the
        # session's pending objects (still listed until this hook returns, in the order
        # they were added) that the flush context wrote; no mapper hook runs per inserted
        # row. A pending object written as an UPDATE (a row switch) is in the log.
        written = flush_context.states
        rows: list[RowChange] = []
        last: type[Any] | None = None
        plan: Plan = EMPTY_PLAN
        muted: frozenset[str] | None = None
        for state, obj in session._new.items():
            if written.get(state) != _SAVED:
                continue  # not in this flush (flush(objects)), or only listed by it
            cls = state.class_
            if cls is not last:
                plan, muted = plan_of(cls)
                last = cls
            if muted is None:
                continue
            if switching and state in switching:
                if frame is None:
                    frame = st.frame(session, sink)
                frame.extend(rows)
                rows = []
                self._switch(st, frame, state, plan, now, muted, switched, ctx)
            else:
                # the object's __dict__ is what state.dict gives (SQLAlchemy 2 has no
                # other instance dict), without the property's call per row
                rows.append(inserted(state, obj.__dict__, plan, now, muted, ctx))
        if rows:
            if frame is None:
                frame = st.frame(session, sink)
            frame.extend(rows)
            rows = []
        if not logged:
            return
        # then updated and deleted rows, in the unit of work's order
        last = None
        for entry in logged:
            if isinstance(entry, RowChange):  # a deleted row, snapshotted before it went
                entry.context = ctx
                rows.append(entry)
                continue
            state = entry
            cls = state.class_
            if cls is not last:
                plan, muted = plan_of(cls)
                last = cls
            if muted is not None:
                obj = state.obj()
                if obj is not None:  # (a modified object is held by its session)
                    rows.append(updated(state, obj.__dict__, plan, now, muted, ctx))
        if rows:
            if frame is None:
                frame = st.frame(session, sink)
            frame.extend(rows)

    @staticmethod
    def _switch(st: SessionState, frame: Frame, state: InstanceState[Any], plan: Plan,
                now: dt.datetime, muted: frozenset[str],
                switched: dict[Any, RowChange], ctx: FrozenDict) -> None:
        """A pending object written as an UPDATE of the deleted row of its key."""
        pk = tuple(state.dict.get(k) for k in plan.pk_keys)
        replaced = switched.get((plan.root, pk))
        if replaced is None:
            frame.add(snapshot(state, "insert", plan, now, muted, context=ctx))
            return
        # the UPDATE wrote only what the new object set: the rest of the row is the
        # replaced row's
        replaced.context = ctx
        frame.add(replaced)
        frame.add(snapshot(state, "insert", plan, now, muted, replaced.raw, ctx))
        unset = [p.key for p in state.mapper.column_attrs if p.key not in state.dict]
        if unset:
            st.reload.append((state, unset))

    def _after_flush_postexec(self, session: Session, flush_context: Any) -> None:
        st: SessionState | None = session.info.get(KEY)
        if st is None or not st.reload:
            return
        reload, st.reload = st.reload, []
        for state, keys in reload:
            obj = state.obj()
            if obj is not None and state.persistent:
                # the row switch's UPDATE left these columns as they were; without this
                # the object (and a later event) would say None
                session.expire(obj, keys)

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
        frame.prepared = build_events(frame, plans, frame.sink.redact)
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
        if st.flushing:  # the flush failed: its transaction was rolled back
            flushes.end(session, st)
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
        if frame.prepared is not None:
            if frame.prepared:
                frame.sink.committed(frame.prepared)
        elif frame.count:
            # made as the sink takes them (inline: as they are delivered)
            frame.sink.committed(iter_events(frame, plans, frame.sink.redact, release=True))


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
    st: SessionState | None = session.info.get(KEY)
    if st is None:
        tracker = Tracker.of(session)
        if tracker is None:
            raise ConfigurationError(
                "emit(..., session=...) was given a session that no bus is attached to: "
                "call signalbus.attach(...) on its factory, or init_app(app, db=db)."
            )
        st = session.info[KEY] = SessionState(tracker)
    return st


def emit_into(session: Session, sender: Any, event: Event, sink: Sink) -> None:
    """Add an emitted event to ``session``'s current transaction, beginning one if needed."""
    st = session_state(session)
    if not session.in_transaction():
        session.begin()
    st.frame(session, sink).add(Emitted(sender, event))
