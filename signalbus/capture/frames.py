"""Frames: row changes, the rules that merge them, and the buffer of one transaction.

Pure data and rules; no session, no database. A :class:`RowChange` is one row's net
change so far; :func:`merge` coalesces it with the row's next change; a :class:`Frame`
holds the changes of one real transaction (the root, or one SAVEPOINT) in the order
rows were first changed, and :meth:`Frame.absorb` merges a released SAVEPOINT's frame
into its parent's.

A row is followed through primary-key changes: every change knows the key the row had
when the change began (``origin``) and the key it has after it (``key``); the frame
finds the row's earlier change by ``origin`` and files the merged change under ``key``.

The rules (the README's "Transaction semantics"):

* insert, then update(s) → one insert with the final values;
* insert, then delete → nothing;
* update, then update → one update from the first old value to the last new one; a
  value changed and changed back is no change;
* update, then delete → one delete of the row as it was committed before the
  transaction (its key, its values);
* delete, then insert of the same key → one update from the deleted row's values.

The merged change keeps its first change's ``occurred_at``, ``source`` (``"orm"`` or
``"bulk"``) and ``context``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from ..events import EMPTY, Event, FrozenDict, normalise

__all__ = ["Emitted", "Frame", "RowChange", "merge"]

Key = tuple[type[Any], tuple[Any, ...]]
"""A row's key in a frame: the root mapped class of its hierarchy and its primary key."""


class RowChange:
    """The net change of one row inside one transaction frame."""

    # (snapshots.inserted and .updated set each slot themselves: a slot added here is
    # added there too)
    __slots__ = ("cls", "context", "data", "key", "muted", "occurred_at", "old", "op", "origin",
                 "pk", "raw", "source")

    def __init__(
        self,
        cls: type[Any],
        origin: Key,
        key: Key,
        op: str,
        pk: tuple[Any, ...],
        data: FrozenDict,
        raw: dict[str, Any],
        old: dict[str, Any],
        occurred_at: dt.datetime,
        muted: frozenset[str],
        source: str = "orm",
        context: FrozenDict = EMPTY,
    ) -> None:
        self.cls = cls
        self.origin = origin
        """The row's key when this change began (before a primary-key change)."""
        self.key = key
        """The row's key after this change."""
        self.op = op
        self.pk = pk
        """The primary key the event names: after the change; for a delete, the key
        the row was committed with."""
        self.data = data
        """Normalised values of the captured attributes (for a delete: as committed); a
        :class:`~signalbus.events.FrozenDict` that events share."""
        self.raw = raw
        """Python values read by conditions (and, for updates, of changed attributes)."""
        self.old = old
        """Updates: Python value before the transaction of each attribute that changed."""
        self.occurred_at = occurred_at
        self.muted = muted
        self.source = source
        """How the change was captured: ``"orm"`` (a flush) or ``"bulk"`` (an ORM
        statement). A row changed both ways in one transaction: its first change's."""
        self.context = context
        """The :func:`signalbus.context` active when the change was captured; a row
        changed several times: its first change's (like ``occurred_at``)."""

    def __repr__(self) -> str:
        return (f"RowChange({self.cls.__name__} {self.op} pk={self.pk!r} data={self.data!r} "
                f"old={self.old!r})")


class Emitted:
    """An :func:`signalbus.emit` event waiting in a transaction frame."""

    __slots__ = ("event", "key", "origin", "sender")

    cls = None
    """No row class: how event building tells an emitted event from a row's change
    (an attribute load where ``isinstance`` costs a call, per entry)."""

    def __init__(self, sender: Any, event: Event) -> None:
        self.sender = sender
        self.event = event
        self.key = self.origin = event.id


Entry = RowChange | Emitted


def same(a: Any, b: Any) -> bool:
    """``a == b`` for attribute values, and identity where ``==`` is not a bool (arrays)."""
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _normalised_or_self(value: Any) -> Any:
    try:
        return normalise(value)
    except (TypeError, ValueError):
        return value


def _net_old(old: dict[str, Any], raw: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``old`` without the attributes whose current value equals their old one."""
    out = {}
    for k, v in old.items():
        if k in raw:
            if same(v, raw[k]):
                continue
        elif k in data and same(_normalised_or_self(v), data[k]):
            continue
        out[k] = v
    return out


def merge(prev: RowChange, nxt: RowChange) -> RowChange | None:
    """Coalesce two changes of one row; ``None`` when they cancel out."""
    muted = prev.muted | nxt.muted
    if prev.op == "insert":
        if nxt.op == "delete":
            return None
        # insert then update: one insert with the final values
        return RowChange(prev.cls, prev.origin, nxt.key, "insert", nxt.pk, nxt.data,
                         {**prev.raw, **nxt.raw}, {}, prev.occurred_at, muted, prev.source,
                         prev.context)
    if prev.op == "update":
        if nxt.op == "delete":
            # the row as committed before the transaction: the delete's values are
            # those of the last flush, put the values the updates replaced back
            data = FrozenDict({k: _normalised_or_self(prev.old[k]) if k in prev.old else v
                               for k, v in nxt.data.items()})
            raw = {**nxt.raw, **prev.old}
            return RowChange(nxt.cls, prev.origin, prev.origin, "delete", prev.origin[1],
                             data, raw, {}, prev.occurred_at, muted, prev.source,
                             prev.context)
        raw = {**prev.raw, **nxt.raw}
        for k in prev.raw:
            # a value the later change did not read again is stale where the later
            # change's data holds the attribute (a delete and re-insert in between)
            if k not in nxt.raw and k in nxt.data:
                del raw[k]
        old = dict(prev.old)
        for k, v in nxt.old.items():
            old.setdefault(k, v)
        return RowChange(nxt.cls, prev.origin, nxt.key, "update", nxt.pk, nxt.data, raw,
                         _net_old(old, raw, nxt.data), prev.occurred_at, muted, prev.source,
                         prev.context)
    if prev.op == "delete" and nxt.op == "insert":
        # a delete followed by an insert of the same key is an update from the deleted
        # row's values (every attribute either side captured is compared)
        old = {}
        for k, v in nxt.data.items():
            if k in prev.data and not same(prev.data[k], v):
                old[k] = prev.raw.get(k)
        for k, v in nxt.raw.items():
            if k not in nxt.data and k in prev.raw and not same(prev.raw[k], v):
                old[k] = prev.raw[k]
        return RowChange(nxt.cls, prev.origin, nxt.key, "update", nxt.pk, nxt.data,
                         dict(nxt.raw), old, prev.occurred_at, muted, prev.source,
                         prev.context)
    raise AssertionError(f"impossible sequence {prev.op} then {nxt.op} for one row")


class Frame:
    """The changes buffered for one real transaction (the root, or one SAVEPOINT).

    ``entries`` keeps each row's change in the slot of its first change (the delivery
    order; ``None`` where changes cancelled out); ``index`` finds a row's slot by its
    current key.
    """

    __slots__ = ("committed", "count", "entries", "index", "prepared", "sink")

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        """What the committed events go to (capture's ``Sink``: the bus)."""
        self.entries: list[Entry | None] = []
        self.index: dict[Any, int] = {}
        self.count = 0
        """Entries that are not ``None``."""
        self.committed = False
        self.prepared: list[Any] | None = None
        """The events built before the database commit (for sinks that store them)."""

    def add(self, entry: Entry) -> None:
        index = self.index
        slot = index.get(entry.origin)
        if slot is None:
            index[entry.key] = len(self.entries)
            self.entries.append(entry)
            self.count += 1
            return
        prev = self.entries[slot]
        assert isinstance(prev, RowChange) and isinstance(entry, RowChange)
        merged = merge(prev, entry)
        del index[entry.origin]
        if merged is None:
            self.entries[slot] = None
            self.count -= 1
            return
        self.entries[slot] = merged
        index[merged.key] = slot

    def extend(self, entries: Iterable[Entry]) -> None:
        """:meth:`add` each of ``entries``, in order (a flush's rows, in one call)."""
        index = self.index
        rows = self.entries
        for entry in entries:
            origin = entry.origin
            slot = len(rows)
            # one lookup files a new row's change (a tuple key hashes again on every
            # lookup): setdefault files it under its origin, the key of most changes
            if index.setdefault(origin, slot) != slot:
                self.add(entry)  # the row's earlier change: merge
                continue
            if entry.key is not origin:
                # a changed key with no earlier change here: filed under the new key
                del index[origin]
                index[entry.key] = slot
            rows.append(entry)
            self.count += 1

    def absorb(self, child: Frame) -> None:
        """Merge the changes of a released SAVEPOINT, in their order."""
        for entry in child.entries:
            if entry is not None:
                self.add(entry)

    def changes(self) -> list[Entry]:
        """The entries in delivery order."""
        return [e for e in self.entries if e is not None]

    def __len__(self) -> int:
        return self.count
