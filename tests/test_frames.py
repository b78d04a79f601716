"""The merge rules and transaction frames on their own, without a database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from signalbus.capture.frames import Frame, RowChange, merge
from signalbus.events import FrozenDict

AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


class File:
    pass


def change(op: str, key: Any, *, origin: Any = None, data: dict[str, Any] | None = None,
           old: dict[str, Any] | None = None, raw: dict[str, Any] | None = None) -> RowChange:
    k = (File, (key,))
    o = (File, (origin,)) if origin is not None else k
    return RowChange(File, o, k, op, (key,), FrozenDict(data or {}), dict(raw or data or {}),
                     dict(old or {}), AT, frozenset())


def test_insert_then_delete_cancels():
    assert merge(change("insert", "a"), change("delete", "a")) is None


def test_update_then_update_runs_from_first_old_to_last_new_and_drops_changed_back():
    first = change("update", "a", data={"size": 2, "n": "x"}, old={"size": 1, "n": "w"})
    second = change("update", "a", data={"size": 3, "n": "w"}, old={"size": 2, "n": "x"})
    merged = merge(first, second)
    assert merged is not None
    assert (merged.op, merged.old) == ("update", {"size": 1})


def test_update_then_delete_is_the_delete_of_the_committed_row():
    first = change("update", "b", origin="a", data={"name": "b", "size": 2},
                   old={"name": "a", "size": 1})
    gone = change("delete", "b", data={"name": "b", "size": 2})
    merged = merge(first, gone)
    assert merged is not None
    assert (merged.op, merged.pk, merged.data) == ("delete", ("a",), {"name": "a", "size": 1})


def test_delete_then_insert_is_an_update_from_the_deleted_values():
    merged = merge(change("delete", "a", data={"size": 1}, raw={"size": 1, "secret": "s"}),
                   change("insert", "a", data={"size": 2}, raw={"secret": "t"}))
    assert merged is not None
    assert (merged.op, merged.old) == ("update", {"size": 1, "secret": "s"})


def test_frame_follows_a_row_through_key_changes_and_keeps_its_first_place():
    frame = Frame(sink=None)
    frame.add(change("insert", "a", data={"name": "a"}))
    frame.add(change("insert", "x", data={"name": "x"}))
    frame.add(change("update", "b", origin="a", data={"name": "b"}, old={"name": "a"}))
    frame.add(change("update", "c", origin="b", data={"name": "c"}, old={"name": "b"}))
    rows = frame.changes()
    assert [(r.op, r.pk, r.data) for r in rows] == [  # type: ignore[union-attr]
        ("insert", ("c",), {"name": "c"}),
        ("insert", ("x",), {"name": "x"}),
    ]


def test_absorbing_a_savepoint_merges_its_changes_in_order():
    parent, child = Frame(sink=None), Frame(sink=None)
    parent.add(change("insert", "a", data={"size": 1}))
    child.add(change("insert", "z", data={"size": 9}))
    child.add(change("update", "a", data={"size": 2}, old={"size": 1}))
    parent.absorb(child)
    assert [(r.op, r.pk) for r in parent.changes()] == [  # type: ignore[union-attr]
        ("insert", ("a",)),
        ("insert", ("z",)),
    ]
