"""``when=`` conditions: :func:`changed` and its ``&``, ``|``, ``~`` combinations.

A condition is judged on the *net* change of a row in a transaction (after
coalescing), against Python attribute values, not the normalised JSON ones:

* on an insert, every attribute whose value is not ``None`` counts as changed from
  nothing, so ``to=`` can match and ``was=`` never does;
* on an update, an attribute counts as changed when its committed value before the
  transaction differs from its value at commit (a value changed and changed back is
  no change);
* on a delete, nothing counts as changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Condition", "RowView", "changed"]

_UNSET: Any = object()


class RowView:
    """What a condition sees of a row's net change."""

    __slots__ = ("new", "old", "op")

    def __init__(self, op: str, new: Mapping[str, Any], old: Mapping[str, Any]) -> None:
        self.op = op
        self.new = new
        """Attribute values after the change (all attributes the binding captures)."""
        self.old = old
        """For updates: ``{attribute: value before}`` of the attributes that changed."""

    def changed_fields(self) -> set[str]:
        if self.op == "insert":
            return {k for k, v in self.new.items() if v is not None}
        if self.op == "update":
            return set(self.old)
        return set()


class Condition:
    """Base class of ``when=`` conditions; combine them with ``&``, ``|`` and ``~``."""

    fields: frozenset[str] | None = None
    """Attributes the condition reads; ``None`` means any attribute."""
    on_update: frozenset[str] | None = None
    """When the condition, on an update, is only "one of these attributes changed"
    (``changed("a", "b")`` without ``to=`` or ``was=``): those attributes, which capture
    tests with one set operation instead of calling the condition. ``None``: call it."""

    def __call__(self, row: RowView) -> bool:
        raise NotImplementedError

    def __and__(self, other: Condition) -> Condition:
        return _Combined("&", self, other)

    def __or__(self, other: Condition) -> Condition:
        return _Combined("|", self, other)

    def __invert__(self) -> Condition:
        return _Not(self)


class _Changed(Condition):
    def __init__(self, names: tuple[str, ...], to: Any, was: Any) -> None:
        self.names = names
        self.to = to
        self.was = was
        self.fields = frozenset(names) if names else None
        self._any_change = to is _UNSET and was is _UNSET
        """No ``to=`` nor ``was=``: on an update, any change of a named attribute."""
        if self._any_change and names:
            self.on_update = frozenset(names)

    def _one(self, name: str, row: RowView, changed: set[str]) -> bool:
        if name not in changed:
            return False
        if self.to is not _UNSET and row.new.get(name) != self.to:
            return False
        if self.was is not _UNSET:
            if row.op != "update" or row.old.get(name, _UNSET) != self.was:
                return False
        return True

    def __call__(self, row: RowView) -> bool:
        if self._any_change and row.op == "update":
            # the common case (changed("plan") on an update), without building a set
            old = row.old
            names = self.names
            if len(names) == 1:
                return names[0] in old
            return bool(old) if not names else any(n in old for n in names)
        changed = row.changed_fields()
        names = self.names or tuple(changed)
        return any(self._one(n, row, changed) for n in names)

    def __repr__(self) -> str:
        args = [repr(n) for n in self.names]
        if self.to is not _UNSET:
            args.append(f"to={self.to!r}")
        if self.was is not _UNSET:
            args.append(f"was={self.was!r}")
        return f"changed({', '.join(args)})"


class _Combined(Condition):
    """``a & b`` (all parts hold) or ``a | b`` (any part holds)."""

    def __init__(self, symbol: str, *parts: Condition) -> None:
        self.symbol = symbol
        self.test = all if symbol == "&" else any
        self.parts = parts
        self.fields = _union(parts)

    def __call__(self, row: RowView) -> bool:
        return self.test(p(row) for p in self.parts)

    def __repr__(self) -> str:
        return "(" + f" {self.symbol} ".join(map(repr, self.parts)) + ")"


class _Not(Condition):
    def __init__(self, part: Condition) -> None:
        self.part = part
        self.fields = part.fields

    def __call__(self, row: RowView) -> bool:
        return not self.part(row)

    def __repr__(self) -> str:
        return f"~{self.part!r}"


def _union(parts: tuple[Condition, ...]) -> frozenset[str] | None:
    out: set[str] = set()
    for part in parts:
        if part.fields is None:
            return None
        out |= part.fields
    return frozenset(out)


def changed(*fields: str, to: Any = _UNSET, was: Any = _UNSET) -> Condition:
    """A condition true when one of ``fields`` changed (any attribute if none given).

    ``to=`` requires the new value to equal it, ``was=`` the old one; both compare
    Python values. With several fields, the condition holds when any one of them
    satisfies it; combine conditions with ``&`` to require all.

    >>> bind(User, "update", "user_plan_changed", when=changed("plan"))
    >>> bind(Issue, "update", "issue_closed", when=changed("status", to="closed"))
    """
    for name in fields:
        if not isinstance(name, str):
            raise TypeError(f"changed() takes attribute names, not {name!r}")
    return _Changed(tuple(fields), to, was)
