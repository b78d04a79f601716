"""``bind()``: the declarations that turn a model's row changes into a named signal.

Bindings are process-wide declarations made at import time (in the host app's own
``signals.py``), like Django's ``@receiver``. A model may be given as a class or as a
``"pkg.module:Class"`` string, resolved lazily so that ``signals.py`` never needs to
import ``models.py``; the string is resolved at the latest on the first flush of a
session attached to a bus.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Iterable
from typing import Any, Literal

import blinker

from . import signals
from .conditions import Condition
from .errors import BindingError

__all__ = ["Binding", "bind"]

Op = Literal["insert", "update", "delete"]
Phase = Literal["commit", "flush"]
Capture = Literal["orm", "trigger"]
OPS: tuple[str, ...] = ("insert", "update", "delete")


@dataclasses.dataclass(eq=False)
class Binding:
    """One ``bind()`` declaration."""

    model: type[Any] | str
    """The mapped class, or the ``"pkg.module:Class"`` string it was declared with."""
    op: Op
    signal: str
    when: Condition | None = None
    fields: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    phase: Phase = "commit"
    capture: Capture = "orm"
    """``"orm"``: the session's flushes and ORM bulk statements; ``"trigger"``: the
    database's triggers (PostgreSQL), whoever writes."""
    cls: type[Any] | None = None
    """The resolved class (``None`` until a string model is resolved)."""

    def describe(self) -> str:
        model = self.model if isinstance(self.model, str) else qualified_name(self.model)
        parts = [repr(model), repr(self.op), repr(self.signal)]
        if self.when is not None:
            parts.append(f"when={self.when!r}")
        if self.fields is not None:
            parts.append(f"fields={sorted(self.fields)!r}")
        if self.exclude:
            parts.append(f"exclude={sorted(self.exclude)!r}")
        if self.phase != "commit":
            parts.append(f"phase={self.phase!r}")
        if self.capture != "orm":
            parts.append(f"capture={self.capture!r}")
        return f"bind({', '.join(parts)})"

    def _key(self) -> tuple[Any, ...]:
        return (self.model, self.op, self.signal, id(self.when), self.fields, self.exclude,
                self.phase, self.capture)


class Registry:
    """All bindings of the process. :attr:`version` changes whenever they do."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bindings: list[Binding] = []
        self.version = 0

    def add(self, binding: Binding) -> Binding:
        with self._lock:
            for existing in self.bindings:
                # Importing a signals module twice (reloads, test collection) must not
                # send a signal twice.
                if existing._key() == binding._key():
                    return existing
            self.bindings.append(binding)
            self.version += 1
        return binding

    def remove(self, binding: Binding) -> None:
        with self._lock:
            if binding in self.bindings:
                self.bindings.remove(binding)
                self.version += 1

    def snapshot(self) -> list[Binding]:
        return list(self.bindings)

    def restore(self, saved: list[Binding]) -> None:
        with self._lock:
            self.bindings = list(saved)
            self.version += 1

    def pending(self) -> list[Binding]:
        return [b for b in self.bindings if b.cls is None]

    def resolve_all(self) -> None:
        """Resolve every string model, raising :class:`BindingError` for the first bad one."""
        for binding in self.pending():
            assert isinstance(binding.model, str)
            binding.cls = import_model(binding.model, binding)
        self.version += 1


registry = Registry()


def qualified_name(cls: type[Any]) -> str:
    """``"pkg.module:Class"`` for a class, as in ``Event.model``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def import_model(path: str, binding: Binding | None = None) -> type[Any]:
    """Import ``"pkg.module:Class"``; the error names the string and what went wrong."""
    where = f" in {binding.describe()}" if binding is not None else ""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise BindingError(
            f"signalbus cannot resolve model {path!r}{where}: "
            "write it as 'pkg.module:Class'."
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise BindingError(
            f"signalbus cannot resolve model {path!r}{where}: "
            f"importing {module_name!r} failed ({exc}). Check the 'pkg.module:Class' string."
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BindingError(
                f"signalbus cannot resolve model {path!r}{where}: module {module_name!r} "
                f"has no attribute {attr!r}. Check the 'pkg.module:Class' string."
            ) from None
    if not isinstance(obj, type):
        raise BindingError(f"signalbus cannot resolve model {path!r}{where}: it is not a class.")
    return obj


def _names(value: Iterable[str] | None, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"{what}= takes a list of attribute names, not the string {value!r}")
    return frozenset(value)


def bind(
    model: type[Any] | str,
    op: Op,
    signal: str | blinker.NamedSignal,
    *,
    when: Condition | None = None,
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    phase: Phase = "commit",
    capture: Capture = "orm",
) -> Binding:
    """Make ``op`` on rows of ``model`` send ``signal``.

    :param model: a mapped class (its mapped subclasses are covered too) or a
        ``"pkg.module:Class"`` string, resolved lazily.
    :param op: ``"insert"``, ``"update"`` or ``"delete"``.
    :param signal: a signal name or a signal from :func:`signalbus.signal`; it is declared.
    :param when: a condition (see :func:`signalbus.changed`) judged on the row's net
        change in the transaction; the signal is sent only when it holds.
    :param fields: the attributes to put in ``data``/``changes`` (all column attributes
        by default); naming a redacted attribute here includes it.
    :param exclude: attributes to leave out.
    :param phase: ``"commit"`` (default) delivers after the root transaction commits;
        ``"flush"`` runs the receivers inside the flush, before the row is written,
        with the live object on ``event.instance`` (Django's ``pre_save``): they may set
        attributes on it, and an exception aborts the flush.
    :param capture: ``"orm"`` (default) captures the session's flushes and ORM bulk
        statements; ``"trigger"`` (PostgreSQL, outbox or Celery delivery) has generated
        database triggers capture every change of the model's table, whoever makes it
        (``psql``, another service, Core statements), into the outbox of the writer's
        transaction. Every binding of a model must use the same capture.

    Returns the :class:`Binding`; binding the same thing twice returns the first one.
    """
    if op not in OPS:
        raise BindingError(f"bind() op must be one of {', '.join(map(repr, OPS))}, not {op!r}")
    if phase not in ("commit", "flush"):
        raise BindingError(f"bind() phase must be 'commit' or 'flush', not {phase!r}")
    if capture not in ("orm", "trigger"):
        raise BindingError(f"bind() capture must be 'orm' or 'trigger', not {capture!r}")
    if capture == "trigger" and phase != "commit":
        raise BindingError(
            "bind(..., capture='trigger') captures in the database, after the row is "
            "written: it cannot run receivers inside the flush. Drop phase='flush', or "
            "use capture='orm' for that binding."
        )
    if when is not None and not isinstance(when, Condition):
        raise BindingError(
            f"bind() when= takes a condition such as signalbus.changed('plan'), not {when!r}"
        )
    sig = signals.resolve(signal)
    signals.signal(sig.name)
    if isinstance(model, str):
        cls = None
    elif isinstance(model, type):
        cls = model
    else:
        raise BindingError(
            f"bind() model must be a mapped class or a 'pkg.module:Class' string, not {model!r}"
        )
    binding = Binding(
        model=model,
        op=op,
        signal=sig.name,
        when=when,
        fields=_names(fields, "fields"),
        exclude=_names(exclude, "exclude") or frozenset(),
        phase=phase,
        capture=capture,
        cls=cls,
    )
    return registry.add(binding)
