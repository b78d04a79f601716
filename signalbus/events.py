"""The :class:`Event` snapshot and the JSON normalisation rules every delivery mode shares.

Normalisation rules (applied once, at capture time, so that inline delivery hands a
receiver exactly what the outbox would have stored and read back):

========================  ==========================================================
Python value              value in ``Event.data`` / ``Event.changes``
========================  ==========================================================
``None``, bool, int, str  unchanged
float                     unchanged (non-finite floats are refused: they are not JSON)
``Decimal``               ``str(value)`` (``Decimal("9.90")`` → ``"9.90"``)
``UUID``                  ``str(value)`` (canonical hyphenated form)
``datetime``              ``value.isoformat()`` (an aware value keeps its offset)
``date``, ``time``        ``value.isoformat()``
``timedelta``             ``value.total_seconds()`` (a float)
``enum.Enum``             its ``.value``, normalised
``bytes``, ``bytearray``  base64 text (standard alphabet, padded)
dict                      a read-only dict; keys become strings as ``json.dumps`` makes them
list, tuple               a tuple (``json.dumps`` writes it as an array)
anything else             :class:`~signalbus.UnserialisableValue` naming model, column, type
========================  ==========================================================
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import json
import keyword
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeAlias

from .errors import UnserialisableValue

__all__ = ["Event", "FrozenDict", "KeyedRowReader", "Outgoing", "RowReader", "keyed_row_reader",
           "normalise", "row_event", "row_reader"]

JSONValue = Any
"""A value made only of ``None``, bool, int, float, str, :class:`FrozenDict` and tuple."""


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses to change.

    It subclasses ``dict`` rather than wrapping one so that ``json.dumps`` writes it
    directly, nested ones included: ``json.dumps(dict(event.data))`` always works.
    """

    __slots__ = ()

    def _readonly(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("Event payloads are read-only; copy with dict(...) to change one")

    __setitem__ = __delitem__ = _readonly
    clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


EMPTY: FrozenDict = FrozenDict()


def _key(key: Any) -> str:
    # json.dumps turns these keys into strings; do the same so that the in-memory
    # payload equals what a JSON round trip gives back.
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int | float):
        return json.dumps(key)
    raise TypeError(f"dictionary key {key!r} of type {type(key).__name__} is not a JSON key")


_SECONDS = [f"{i:02d}" for i in range(60)]
_DIGITS3 = [f"{i:03d}" for i in range(1000)]
"""``"000"`` to ``"999"``: a value's microseconds are written as two of them (two list
lookups cost half of ``str(us + 1000000)[1:]``'s decimal conversion)."""
_timezone = dt.timezone
_MINUTE = dt.timedelta(minutes=1)
_NO_ZONE = object()
"""The ``tzinfo`` of :attr:`MinuteTexts.last` before any: no value's."""


class MinuteTexts:
    """``datetime.isoformat()``, cheaper for values that share a minute (:meth:`text`).

    CPython formats every field of a datetime through ``PyUnicode_FromFormat``; rows
    written together mostly share their date, hour, minute and offset. The text up to
    the minute and the offset after the microseconds are kept per minute and zone, at
    most ``kept`` of them (then it starts over, so that a long-running process does not
    grow it); the seconds and microseconds are put in between. Only for naive values and
    fixed offsets (:class:`datetime.timezone`): another ``tzinfo`` may give two offsets
    within one minute, and is formatted by ``isoformat()``.

    The latest minute seen twice is also kept at hand (:attr:`last`, with its bounds):
    a value inside it, with the same ``tzinfo`` object, is formatted without building
    the dictionary's key. That is where the values written now fall (a ``created_at``),
    while the ``created_at`` of older rows, loaded for an update, do not move it.
    Measured per value (100 values of one minute): 400 ns against 641 ns for the
    dictionary alone, 671 ns for ``isoformat()``; a value of an older minute found in
    the dictionary, 872 ns against 730 ns (docs/delivery.md, "ORM").
    """

    __slots__ = ("kept", "last", "parts")

    def __init__(self, kept: int = 4096) -> None:
        self.kept = kept
        self.parts: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        """Per minute and zone: the texts before the seconds and after the microseconds;
        from a minute's second value on, also the minute's bounds and its ``tzinfo``."""
        self.last: tuple[Any, ...] = ("", "", None, None, _NO_ZONE)
        """The entry of :attr:`parts` for the latest minute seen twice."""

    def text(self, value: dt.datetime) -> str:
        """``value.isoformat()``."""
        us = value.microsecond
        last = self.last
        if us and value.tzinfo is last[4] and last[2] <= value < last[3]:
            return (f"{last[0]}{_SECONDS[value.second]}.{_DIGITS3[us // 1000]}"
                    f"{_DIGITS3[us % 1000]}{last[1]}")
        tz = value.tzinfo
        if not us or (tz is not None and type(tz) is not _timezone):
            return value.isoformat()
        key = (value.minute, value.hour, value.day, value.month, value.year, tz)
        known = self.parts
        parts = known.get(key)
        if parts is None:
            text = value.isoformat()  # YYYY-MM-DDTHH:MM:SS.ffffff[+HH:MM[:SS[.ffffff]]]
            if len(known) >= self.kept:
                known.clear()
            known[key] = (text[:17], text[26:])
            return text
        if len(parts) == 2:  # the minute's second value: its bounds, once
            start = value.replace(second=0, microsecond=0)
            try:
                end = start + _MINUTE
            except OverflowError:  # the last minute of year 9999: never at hand
                end = start
            parts = known[key] = (*parts, start, end, tz)
        if tz is not last[4] or parts[2] > last[2]:
            self.last = parts
        return (f"{parts[0]}{_SECONDS[value.second]}.{_DIGITS3[us // 1000]}"
                f"{_DIGITS3[us % 1000]}{parts[1]}")


minute_texts = MinuteTexts()
"""The process's cache of :class:`MinuteTexts` (what :func:`normalise` uses)."""


def _float(value: float) -> float:
    if not math.isfinite(value):
        raise TypeError(f"the float {value!r} is not a JSON number")
    return value


_SCALARS: dict[type, Callable[[Any], JSONValue]] = {
    str: lambda v: v,
    int: lambda v: v,
    bool: lambda v: v,
    type(None): lambda v: v,
    float: _float,
    decimal.Decimal: str,
    uuid.UUID: str,
    dt.datetime: minute_texts.text,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    dt.timedelta: dt.timedelta.total_seconds,
    bytes: lambda v: base64.b64encode(v).decode("ascii"),
    bytearray: lambda v: base64.b64encode(bytes(v)).decode("ascii"),
}


AS_IS: frozenset[type] = frozenset({str, int, bool, type(None)})
"""The types whose values :func:`normalise` returns unchanged: callers on a hot path test
``type(value) in AS_IS`` before calling it."""


def normalise(value: Any) -> JSONValue:
    """Return ``value`` as the frozen JSON value an :class:`Event` carries.

    Raises :class:`TypeError` for a value that has no rule; capture turns that into
    :class:`~signalbus.UnserialisableValue` naming the model and column.
    """
    convert = _SCALARS.get(type(value))
    if convert is not None:
        return convert(value)
    if isinstance(value, enum.Enum):
        return normalise(value.value)
    if isinstance(value, Mapping):
        return FrozenDict({_key(k): normalise(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(normalise(v) for v in value)
    # Subclasses of the scalar types (str enums are handled above, IntEnum too).
    for kind, convert in _SCALARS.items():
        if isinstance(value, kind):
            return convert(value)
    kind_name = f"{type(value).__module__}.{type(value).__qualname__}"
    raise TypeError(f"values of type {kind_name} are not JSON")


RowReader: TypeAlias = Callable[[Mapping[str, Any]], FrozenDict]
"""Reads fixed keys of a mapping into a :class:`FrozenDict` of normalised values."""

KeyedRowReader: TypeAlias = Callable[[Mapping[str, Any]], tuple[FrozenDict, tuple[Any, ...]]]
"""A :data:`RowReader` that also returns the row's primary key (values as they are)."""


def row_reader(keys: tuple[str, ...], expect: Mapping[str, type] | None = None
               ) -> RowReader:
    """A function ``read(row)`` returning ``FrozenDict({k: normalise(row[k]) for k in
    keys})``, in ``keys`` order: ``KeyError`` for a key ``row`` lacks, ``TypeError`` for
    a value :func:`normalise` refuses.

    Capture reads every captured column of every row it captures; this is the loop over
    them written out for the given keys (as :mod:`dataclasses` writes ``__init__``):
    one local per key, the types that need nothing tested inline, no comprehension.
    Measured on 5 columns (an int, two str, a bool, a datetime): 909 ns a row, against
    1,145 ns for the comprehension over the keys it replaces; 369 ns and 510 ns without
    the datetime. The keys are written as ``repr()`` literals, so any attribute name
    is safe.

    ``expect``: the Python type a key's values mostly have (its column type's), tested
    first: for ``str``, ``int`` or ``bool`` an identity test instead of the set lookup
    (130 instructions less per value), for ``datetime`` its converter called directly
    (no converter lookup). Any other value takes the general path, so the result is the
    same with or without it.
    """
    read: RowReader = _compile_reader(keys, None, expect or {})
    return read


def keyed_row_reader(keys: tuple[str, ...], pk_keys: tuple[str, ...],
                     expect: Mapping[str, type] | None = None) -> KeyedRowReader:
    """:func:`row_reader` that also returns ``tuple(row[k] for k in pk_keys)``, the
    values as they are: ``read(row) -> (data, pk)``, with the same errors.

    What capture asks of every inserted and updated row, in one call: measured 896 ns
    against 1,105 ns for the data, then the key, each read by a call of its own.
    """
    read: KeyedRowReader = _compile_reader(keys, pk_keys, expect or {})
    return read


_EXPECTED = {str: "str", int: "int", bool: "bool", dt.datetime: "datetime"}
"""The expected types a reader tests first, by the name the reader's code gives them."""


def _compile_reader(keys: tuple[str, ...], pk_keys: tuple[str, ...] | None,
                    expect: Mapping[str, type]) -> Any:
    lines = ["def read(row):"]
    for i, key in enumerate(keys):
        # a key column also keeps its value as it is (r{i}), for the key
        alias = f"r{i} = " if pk_keys is not None and key in pk_keys else ""
        lines.append(f"    v{i} = {alias}row[{key!r}]")
        kind = expect.get(key)
        expected = _EXPECTED.get(kind) if kind is not None else None
        if expected == "datetime":
            lines.append(f"    if type(v{i}) is datetime:")
            lines.append(f"        v{i} = datetime_text(v{i})")
            lines.append(f"    elif type(v{i}) not in AS_IS:")
        elif expected is not None:
            lines.append(f"    if type(v{i}) is not {expected} and type(v{i}) not in AS_IS:")
        else:
            lines.append(f"    if type(v{i}) not in AS_IS:")
        lines.append(f"        v{i} = convert(type(v{i}), normalise)(v{i})")
    if all(key.isascii() and key.isidentifier() and not keyword.iskeyword(key)
           for key in keys):
        # keyword arguments: no dict made and copied (190 instructions less for five);
        # ASCII names only (the compiler NFKC-normalises other identifiers)
        data = "FrozenDict(" + ", ".join(f"{key}=v{i}" for i, key in enumerate(keys)) + ")"
    else:
        data = ("FrozenDict({" + ", ".join(f"{key!r}: v{i}" for i, key in enumerate(keys))
                + "})")
    if pk_keys is None:
        lines.append(f"    return {data}")
    else:
        # a key column left out of the data (fields=, redaction) is read here
        pk = "".join((f"r{keys.index(k)}" if k in keys else f"row[{k!r}]") + ", "
                     for k in pk_keys)
        lines.append(f"    return {data}, ({pk})")
    namespace: dict[str, Any] = {"AS_IS": AS_IS, "convert": _SCALARS.get,
                                 "normalise": normalise, "FrozenDict": FrozenDict,
                                 "str": str, "int": int, "bool": bool,
                                 "datetime": dt.datetime,
                                 "datetime_text": _SCALARS[dt.datetime]}
    what = f"{keys!r}" if pk_keys is None else f"{keys!r} key {pk_keys!r}"
    exec(compile("\n".join(lines), f"<signalbus row reader {what}>", "exec"), namespace)
    return namespace["read"]


def freeze(value: Any) -> JSONValue:
    """Freeze a value read back from JSON (lists → tuples, dicts → :class:`FrozenDict`)."""
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def normalise_payload(data: Mapping[str, Any], what: str) -> FrozenDict:
    """Normalise a mapping of values, naming ``what`` and the key in the error."""
    out = {}
    for key, value in data.items():
        try:
            out[_key(key)] = normalise(value)
        except TypeError as exc:
            raise UnserialisableValue(
                f"signalbus cannot put {what}[{key!r}] into an event: {exc}. "
                "Pass a JSON value (str, number, bool, None, list, dict, or a "
                "Decimal, UUID, date/time or enum, which are converted)."
            ) from None
    return FrozenDict(out)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The immutable snapshot of one committed change (or one emitted domain event).

    Every receiver gets one as the ``event`` keyword argument. Its payload is JSON
    clean: ``json.dumps(event.to_dict())`` always works, and the same event reaches
    a receiver identically in every delivery mode (only :attr:`attempt` differs).
    """

    id: str
    """A UUID string, unique per event: the idempotency key for receivers."""
    signal: str
    """The name of the signal sent."""
    model: str | None
    """``"pkg.module:Class"`` of the changed row's class, ``None`` for an emitted event."""
    op: str
    """``"insert"``, ``"update"`` or ``"delete"`` for row changes; ``"emit"`` for :func:`emit`."""
    pk: JSONValue
    """The primary key: a value, or a tuple of values for a composite key."""
    data: FrozenDict
    """Column values after the change, keyed by mapped attribute name."""
    changes: FrozenDict = EMPTY
    """For updates, ``{attribute: (old, new)}`` of the net change in the transaction."""
    occurred_at: dt.datetime
    """When the change was first flushed (timezone-aware UTC)."""
    source: str = "orm"
    """``"orm"``, ``"bulk"``, ``"trigger"`` or ``"emit"``."""
    context: FrozenDict = EMPTY
    """What :func:`signalbus.context` set where the change was captured (who made it, the
    request id): a read-only mapping of JSON values, empty when none was set."""
    attempt: int = 1
    """1 on first delivery, incremented on every retry by the outbox."""
    instance: Any = dataclasses.field(default=None, compare=False, repr=False)
    """The live object, only for ``phase="flush"`` bindings; ``None`` otherwise."""

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (what the outbox stores)."""
        return {
            "id": self.id,
            "signal": self.signal,
            "model": self.model,
            "op": self.op,
            "pk": self.pk,
            "data": self.data,
            "changes": self.changes,
            "occurred_at": self.occurred_at.isoformat(),
            "source": self.source,
            "context": self.context,
            "attempt": self.attempt,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_dict` output (after a JSON round trip)."""
        return cls(
            id=value["id"],
            signal=value["signal"],
            model=value["model"],
            op=value["op"],
            pk=freeze(value["pk"]),
            data=freeze(value["data"]),
            changes=freeze(value.get("changes") or {}),
            occurred_at=dt.datetime.fromisoformat(value["occurred_at"]),
            source=value.get("source", "orm"),
            # rows stored by the first release have no context
            context=freeze(value["context"]) if value.get("context") else EMPTY,
            attempt=value.get("attempt", 1),
        )


Outgoing: TypeAlias = tuple[Any, Event]
"""An event on its way to receivers, with its sender: the row's class, or ``None`` for an
emitted event."""


class _Unfrozen:
    """An object with :class:`Event`'s slots and no frozen ``__setattr__``: filled with
    plain attribute stores, then turned into an Event (CPython lets an object change its
    class for one whose slots are the same). A slot added to Event is set in
    :func:`row_event` and in :func:`signalbus.capture.build.iter_events`."""

    __slots__ = Event.__slots__


def row_event(id: str, signal: str, model: str, op: str, pk: JSONValue, data: FrozenDict,
              changes: FrozenDict, occurred_at: dt.datetime, source: str = "orm",
              context: FrozenDict = EMPTY) -> Event:
    """A row :class:`Event` from values capture has already normalised.

    The same object ``Event(...)`` makes (``attempt=1``), at a third of the cost of the
    frozen dataclass's keyword ``__init__``: capture makes one per bound row. ``context``
    is the (already normalised, shared) mapping of :func:`signalbus.context`.
    """
    event: Any = _Unfrozen()
    event.id = id
    event.signal = signal
    event.model = model
    event.op = op
    event.pk = pk
    event.data = data
    event.changes = changes
    event.occurred_at = occurred_at
    event.source = source
    event.context = context
    event.attempt = 1
    event.instance = None
    event.__class__ = Event
    result: Event = event
    return result


def _row_event_by_descriptors(id: str, signal: str, model: str, op: str, pk: JSONValue,
                              data: FrozenDict, changes: FrozenDict,
                              occurred_at: dt.datetime, source: str = "orm",
                              context: FrozenDict = EMPTY) -> Event:
    """:func:`row_event` where an object cannot change its class (not CPython)."""
    event: Event = object.__new__(Event)
    for name, value in (("id", id), ("signal", signal), ("model", model), ("op", op),
                        ("pk", pk), ("data", data), ("changes", changes),
                        ("occurred_at", occurred_at), ("source", source),
                        ("context", context), ("attempt", 1), ("instance", None)):
        object.__setattr__(event, name, value)
    return event


SWAP_CLASS = True
"""Whether this interpreter lets an :class:`_Unfrozen` become an :class:`Event` (CPython
does): event building writes :func:`row_event` out inline when it does."""

try:
    row_event("", "", "", "", None, EMPTY, EMPTY, dt.datetime.now(dt.UTC))
except TypeError:  # pragma: no cover - an interpreter without __class__ assignment
    row_event = _row_event_by_descriptors  # noqa: F811
    SWAP_CLASS = False
