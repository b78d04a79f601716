"""Snapshots: one row's values, as a flush wrote them, become a :class:`RowChange`.

Called by the listeners (an inserted, updated or deleted object) and, for the values
alone, by bulk and trigger capture (a row read back from the database). Nothing here
keeps state.

Values are normalised here, at capture time, so that a value that is not JSON fails the
flush that wrote it, with an error naming the model and the column
(:class:`~signalbus.UnserialisableValue`), rather than a delivery later.

Most values (``str``, ``int``, ``bool``, ``None``) need nothing, a ``datetime`` its
ISO text; a value of another type goes through :func:`signalbus.events.normalise`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from sqlalchemy.orm import InstanceState
from sqlalchemy.orm.base import NO_VALUE

from ..errors import UnserialisableValue
from ..events import EMPTY, FrozenDict, normalise
from .frames import RowChange
from .plans import Plan

__all__ = ["deleted", "inserted", "normalised", "normalised_one_by_one", "snapshot", "updated"]

_new = object.__new__

NOTHING: dict[str, Any] = {}
"""The empty ``raw``/``old`` of most inserted rows (shared, never changed)."""


def normalised(cls: type[Any], plan: Plan, row: Mapping[str, Any]) -> FrozenDict:
    """The normalised values of ``plan.capture`` in ``row`` (an object's ``__dict__``,
    or a row read back): ``KeyError`` when one is not there; a value that is not JSON
    raises :class:`~signalbus.UnserialisableValue` naming the column."""
    try:
        return plan.read(row)
    except TypeError:
        # one to refuse (or a non-finite float): named here
        return FrozenDict(normalised_one_by_one(cls, [(k, row[k]) for k in plan.capture]))


def normalised_one_by_one(cls: type[Any], values: Iterable[tuple[str, Any]]
                          ) -> dict[str, Any]:
    """``{attribute: normalise(value)}``; an error names the model and the column."""
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


def _value(state: InstanceState[Any], key: str,
           new_key: Mapping[str, Any] | None = None) -> Any:
    """The value of attribute ``key``, loaded when the object does not hold it (expired,
    or a server-side value the statement did not return). ``new_key``: the row's primary
    key after this flush (``{attribute: value}``), when it may differ from the identity
    the object still carries."""
    d = state.dict
    if key in d:
        return d[key]
    return _load(state, (key,), new_key)[key]


def _load(state: InstanceState[Any], keys: tuple[str, ...],
          new_key: Mapping[str, Any] | None) -> dict[str, Any]:
    """Load ``keys`` of the object's row.

    The object's identity still names the key the row had before this flush (SQLAlchemy
    moves it after ``after_flush``): an attribute of a row whose primary key this flush
    changed is read by the new key, without touching the object (its attributes stay
    expired and load by the new identity once the flush is over)."""
    ident = state.key
    if new_key is None or ident is None or tuple(ident[1]) == tuple(new_key.values()):
        obj = state.obj()
        return {k: getattr(obj, k) for k in keys}
    session = state.session
    assert session is not None
    cls = state.class_
    stmt = (select(*(getattr(cls, k) for k in keys))
            .where(*(getattr(cls, k) == v for k, v in new_key.items())))
    return dict(zip(keys, session.execute(stmt).one(), strict=True))


def _committed(state: InstanceState[Any], key: str) -> Any:
    """The value ``key`` has in the database (before a pending change of it)."""
    original = state.committed_state.get(key, NO_VALUE)
    if original is not NO_VALUE:
        return original
    return _value(state, key)


def _read_loading(state: InstanceState[Any], d: Mapping[str, Any], plan: Plan
                  ) -> tuple[FrozenDict, tuple[Any, ...]]:
    """``plan.read_keyed(d)`` when it failed: the row's normalised data and primary key,
    loading what ``d`` (the object's ``__dict__``) does not hold (expired, or a
    server-side value the statement did not return); a value that is not JSON raises
    :class:`~signalbus.UnserialisableValue` naming the column."""
    # (a key attribute not in d did not change: the object's identity loads it)
    pk = tuple(d[k] if k in d else _value(state, k) for k in plan.pk_keys)
    missing = tuple(k for k in plan.capture if k not in d)
    loaded = _load(state, missing, dict(zip(plan.pk_keys, pk, strict=True))) if missing else {}
    full = {k: d[k] if k in d else loaded[k] for k in plan.capture}
    return normalised(state.class_, plan, full), pk


def inserted(state: InstanceState[Any], d: Mapping[str, Any], plan: Plan,
             now: dt.datetime, muted: frozenset[str], context: FrozenDict,
             unset: Mapping[str, Any] | None = None) -> RowChange:
    """An inserted row's change; ``d`` is the object's ``__dict__``.

    ``unset``: the values of attributes the object never set, when they are not ``None``
    in the database (the row a new object replaced keeps them).
    """
    if unset:
        d = {**unset, **d}
    try:
        data, pk = plan.read_keyed(d)  # the data and the key, in one call
    except (KeyError, TypeError):
        data, pk = _read_loading(state, d, plan)
    key = (plan.root, pk)
    # RowChange(...) written out as slot stores on a new object: one per inserted row,
    # measured 156 ns less than the constructor's call (its 12 arguments); every slot
    # of RowChange is set here (and in updated())
    rc: RowChange = _new(RowChange)
    rc.cls = state.class_
    rc.origin = rc.key = key
    rc.op = "insert"
    rc.pk = pk
    rc.data = data
    # most rows: nothing for conditions to read, and nothing old
    rc.raw = ({k: d[k] if k in d else _value(state, k) for k in plan.raw} if plan.raw
              else NOTHING)
    rc.old = NOTHING
    rc.occurred_at = now
    rc.muted = muted
    rc.source = "orm"
    rc.context = context
    return rc


def updated(state: InstanceState[Any], d: Mapping[str, Any], plan: Plan,
            now: dt.datetime, muted: frozenset[str], context: FrozenDict) -> RowChange:
    """An updated row's change; ``d`` is the object's ``__dict__``."""
    try:
        data, pk = plan.read_keyed(d)
    except (KeyError, TypeError):
        data, pk = _read_loading(state, d, plan)
    root = plan.root
    key = (root, pk)
    raw: dict[str, Any] = {}
    for k in plan.raw:  # (a loop: no comprehension to make for one or two attributes)
        raw[k] = d[k] if k in d else _value(state, k, dict(zip(plan.pk_keys, pk, strict=True)))
    old: dict[str, Any] = {}
    # committed_state holds each changed attribute's value from before it was set
    # (loaded by active history when it had expired): the scalar history, without
    # building state.attrs (an AttributeState per attribute, per row)
    columns = plan.columns
    for k, original in state.committed_state.items():
        if k in columns and k in d:
            new = d[k]
            if original is NO_VALUE:
                original = None
            else:
                try:
                    if original == new:
                        continue  # set back to the value it had: no change
                except Exception:  # an exotic type whose == is not a bool (arrays)
                    if original is new:
                        continue
            old[k] = original
            raw[k] = new
    # the key the row had before this flush (the identity map's key is updated after
    # after_flush): a primary-key change merges with the row's earlier changes
    ident = state.key
    rc: RowChange = _new(RowChange)  # slot stores, as in inserted()
    rc.cls = state.class_
    rc.origin = key if ident is None or ident[1] == pk else (root, tuple(ident[1]))
    rc.key = key
    rc.op = "update"
    rc.pk = pk
    rc.data = data
    rc.raw = raw
    rc.old = old
    rc.occurred_at = now
    rc.muted = muted
    rc.source = "orm"
    rc.context = context
    return rc


def snapshot(state: InstanceState[Any], op: str, plan: Plan, now: dt.datetime,
             muted: frozenset[str], unset: Mapping[str, Any] | None = None,
             context: FrozenDict = EMPTY) -> RowChange:
    """One row's change as a flush wrote it (a delete: the row as committed)."""
    if op == "delete":
        return deleted(state, plan, now, muted, context)
    if op == "insert":
        return inserted(state, state.dict, plan, now, muted, context, unset)
    return updated(state, state.dict, plan, now, muted, context)


def deleted(state: InstanceState[Any], plan: Plan, now: dt.datetime,
            muted: frozenset[str], context: FrozenDict = EMPTY) -> RowChange:
    """A deleted row's change: the row as committed, every column of it."""
    cls = state.class_
    # every column: a delete followed by an insert of the key becomes an update
    raw = {k: _committed(state, k) for k in plan.capture}
    for k in plan.columns:
        if k not in raw:
            raw[k] = _committed(state, k)
    data = normalised(cls, plan, raw)
    pk = state.key[1] if state.key is not None else tuple(raw[k] for k in plan.pk_keys)
    key = (plan.root, tuple(pk))
    return RowChange(cls, key, key, "delete", tuple(pk), data, raw, {}, now, muted, "orm",
                     context)
