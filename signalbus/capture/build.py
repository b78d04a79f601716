"""Event building: a frame's row changes become the events of their bindings.

Judged on each row's net change: ``when=`` conditions, the visible attributes of an
update binding without one, muting recorded at capture time. No session involved.
"""

from __future__ import annotations

import os
from typing import Any

from ..bindings import qualified_name
from ..conditions import RowView
from ..events import _SCALARS, EMPTY, FrozenDict, Outgoing, normalise, row_event
from .frames import Emitted, Frame, RowChange
from .plans import BindingPlan, PlanBook

__all__ = ["build_events", "new_ids", "row_events"]


def new_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUID strings, from one ``urandom`` call."""
    h = os.urandom(16 * max(n, 1)).hex()
    variant = "89ab"
    return [
        f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-"
        f"{variant[int(h[i + 16], 16) & 3]}{h[i + 17:i + 20]}-{h[i + 20:i + 32]}"
        for i in range(0, len(h), 32)
    ]


def build_events(frame: Frame, plans: PlanBook, redact: tuple[str, ...]) -> list[Outgoing]:
    """The events of a committed frame, in the order rows were first changed."""
    out: list[Outgoing] = []
    ids = new_ids(len(frame))  # one per row; row_events makes more when a row has several
    for entry in frame.entries:
        if entry is None:
            continue
        if isinstance(entry, Emitted):
            out.append((entry.sender, entry.event))
            continue
        bindings = plans.commit(entry.cls, redact).by_op.get(entry.op)
        if bindings:
            row_events(entry, bindings, ids, out)
    return out


def row_events(rc: RowChange, bindings: tuple[BindingPlan, ...], ids: list[str],
               out: list[Outgoing]) -> None:
    """Append the events ``bindings`` make of one row's (net) change to ``out``."""
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
    for bp in bindings:
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
        if len(data_all) == len(bp.payload):
            data = data_all  # the common case: one binding takes every captured column
        else:
            data = FrozenDict({k: data_all[k] for k in bp.payload if k in data_all})
        changes: Any
        if rc.op == "update":
            changes = FrozenDict({
                k: (normalise(rc.old[k]), data_all.get(k))
                for k in changed if k in bp.payload_set
            })
        else:
            changes = EMPTY
        if not ids:
            ids.extend(new_ids(8))
        out.append((rc.cls, row_event(ids.pop(), b.signal, model, rc.op, pk, data, changes,
                                      rc.occurred_at, rc.source, rc.context)))
