"""Plans: what the bindings of a mapped class need captured from its rows.

A plan is computed once per (class, phase, redaction setting) from the binding
registry and cached by a :class:`PlanBook`, which drops its cache when a binding is
added. Nothing here touches a session.

Commit-phase plans cover every op at once: a row's changes in one transaction are
coalesced before anyone knows which op the net change will be (an insert followed by
updates is an insert; a delete followed by an insert of its key is an update), so a
class with any commit binding has its inserts, updates and deletes captured.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Mapper

from ..bindings import Binding, registry
from ..errors import BindingError
from ..events import KeyedRowReader, RowReader, keyed_row_reader, row_reader
from ..settings import fold

__all__ = ["OPS", "BindingPlan", "Plan", "PlanBook", "plans"]

OPS = ("insert", "update", "delete")


@dataclasses.dataclass(frozen=True)
class BindingPlan:
    """One binding, with the attributes it puts in events."""

    binding: Binding
    payload: tuple[str, ...]
    """Attributes put into ``data``: fields/exclude applied, redacted ones removed."""
    payload_set: frozenset[str]
    watch: frozenset[str] | None = None
    """On an update, the binding sends when one of these attributes changed, and only
    then: without ``when=``, its visible attributes (``fields``/``exclude`` applied,
    redacted ones included: a change of a redacted column still sends); with one, the
    condition's :attr:`~signalbus.conditions.Condition.on_update`; ``None`` when the
    condition must be called."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to capture of one class's rows for the bindings of one phase."""

    by_op: Mapping[str, tuple[BindingPlan, ...]]
    """The bindings of each op, in declaration order."""
    signals: frozenset[str]
    capture: tuple[str, ...]
    """Attributes normalised into the row's data (the union of the payloads)."""
    raw: tuple[str, ...]
    """Attributes whose Python values conditions read, and the visible attributes left
    out of every payload (a change of a redacted column still triggers an update)."""
    columns: frozenset[str]
    pk_keys: tuple[str, ...]
    root: type[Any]
    plain: Mapping[str, tuple[tuple[str, frozenset[str] | None], ...]] = dataclasses.field(
        default_factory=dict)
    """Per op, when every binding of it sends the row's change as it is (every captured
    attribute, no condition to call): each binding's signal and, for updates, the
    attributes it watches (:attr:`BindingPlan.watch`). Event building's fast path; an
    op not listed takes the general one."""
    read: RowReader = dataclasses.field(default=row_reader(()), compare=False, repr=False)
    """Reads :attr:`capture` from a row into normalised data (:func:`row_reader`)."""
    read_keyed: KeyedRowReader = dataclasses.field(default=keyed_row_reader((), ()),
                                                   compare=False, repr=False)
    """:attr:`read`, and the row's :attr:`pk_keys` values (:func:`keyed_row_reader`)."""

    @property
    def bound(self) -> bool:
        return bool(self.signals)


EMPTY_PLAN = Plan({}, frozenset(), (), (), frozenset(), (), object)


def redacted(name: str, redact: tuple[str, ...]) -> bool:
    """Whether attribute ``name`` is left out of payloads: one of the ``redact``
    patterns (already folded by the settings) is in its folded form."""
    folded = fold(name)
    return any(pattern in folded for pattern in redact)


def build_plan(cls: type[Any], ops: tuple[str, ...], phase: str,
               redact: tuple[str, ...], by: str = "orm") -> Plan:
    """The plan of ``ops`` of ``phase`` on ``cls`` rows captured ``by`` ``"orm"`` or
    ``"trigger"`` (no cache)."""
    covering = [b for b in registry.bindings
                if b.cls is not None and b.phase == phase and issubclass(cls, b.cls)]
    kinds = {b.capture for b in covering}
    if len(kinds) > 1:
        trigger = next(b for b in covering if b.capture == "trigger")
        orm = next(b for b in covering if b.capture != "trigger")
        raise BindingError(
            f"{trigger.describe()} and {orm.describe()}: {cls.__qualname__} is captured "
            "by database triggers, so every binding of it must say capture='trigger' "
            "(a row change would otherwise be captured twice)."
        )
    matching = [b for b in covering if b.op in ops and b.capture == by]
    if not matching:
        return EMPTY_PLAN
    mapper: Mapper[Any] = sa_inspect(cls)
    columns = [prop.key for prop in mapper.column_attrs]
    column_set = frozenset(columns)
    by_op: dict[str, list[BindingPlan]] = {}
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
                        if (b.fields is not None and c in b.fields) or not redacted(c, redact))
        watch = frozenset(visible) if b.when is None else b.when.on_update
        by_op.setdefault(b.op, []).append(
            BindingPlan(b, payload, frozenset(payload), watch))
        capture.update(dict.fromkeys(payload))
        if b.when is not None:
            raw.update(dict.fromkeys(columns if b.when.fields is None else
                                     [c for c in columns if c in b.when.fields]))
        if b.op == "update":
            raw.update(dict.fromkeys(c for c in visible if c not in payload))
    pk_keys = tuple(mapper.get_property_by_column(col).key for col in mapper.primary_key)
    expected = {key: kind for key in capture
                if (kind := _python_type(mapper.column_attrs[key])) is not None}
    plain = {op: tuple((bp.binding.signal, bp.watch if op == "update" else None)
                       for bp in bps)
             for op, bps in by_op.items()
             if all(len(bp.payload) == len(capture)
                    and (bp.watch is not None if op == "update" else bp.binding.when is None)
                    for bp in bps)}
    return Plan(
        {op: tuple(bps) for op, bps in by_op.items()},
        frozenset(b.signal for b in matching),
        tuple(capture),
        tuple(raw),
        column_set,
        pk_keys,
        mapper.base_mapper.class_,
        plain,
        row_reader(tuple(capture), expected),
        keyed_row_reader(tuple(capture), pk_keys, expected),
    )


def _python_type(prop: Any) -> type | None:
    """The Python type of a column attribute's values, when its column type says (the
    row readers test it first); ``None`` when it does not."""
    try:
        kind = prop.columns[0].type.python_type
    except Exception:  # NotImplementedError: a type that does not say; an expression
        return None
    return kind if isinstance(kind, type) else None


class PlanBook:
    """The cache of plans, emptied whenever the binding registry changes."""

    def __init__(self) -> None:
        self._plans: dict[tuple[type[Any], str, str, tuple[str, ...]], Plan] = {}
        self._version = -1
        self._lock = threading.Lock()

    def _fresh(self) -> None:
        if self._version != registry.version:
            with self._lock:
                self._plans.clear()
                self._version = registry.version

    def commit(self, cls: type[Any], redact: tuple[str, ...]) -> Plan:
        """The plan of every commit-phase binding of ``cls`` (all ops)."""
        self._fresh()
        key = (cls, "*", "commit", redact)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = build_plan(cls, OPS, "commit", redact)
        return plan

    def flush(self, cls: type[Any], op: str, redact: tuple[str, ...]) -> Plan:
        """The plan of the ``phase="flush"`` bindings of ``op`` on ``cls``."""
        self._fresh()
        key = (cls, op, "flush", redact)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = build_plan(cls, (op,), "flush", redact)
        return plan

    def trigger(self, cls: type[Any], redact: tuple[str, ...]) -> Plan:
        """The plan of every ``capture="trigger"`` binding of ``cls`` (all ops)."""
        self._fresh()
        key = (cls, "*", "trigger", redact)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = build_plan(cls, OPS, "commit", redact, "trigger")
        return plan

    def payload(self, binding: Binding, redact: tuple[str, ...]) -> frozenset[str]:
        """The attributes ``binding`` puts in its events' ``data``."""
        assert binding.cls is not None
        if binding.capture == "trigger":
            plan = self.trigger(binding.cls, redact)
        elif binding.phase == "commit":
            plan = self.commit(binding.cls, redact)
        else:
            plan = self.flush(binding.cls, binding.op, redact)
        return next(bp.payload_set for bp in plan.by_op.get(binding.op, ())
                    if bp.binding is binding)


plans = PlanBook()
"""The process's plans (bindings are process-wide declarations, so are their plans)."""
