"""``context()``: who made a change, carried by every event captured while it is active.

``with signalbus.context(actor="ada", request_id="r1"):`` (or ``@signalbus.context(...)``)
sets values that every event captured inside the block carries as
:attr:`signalbus.Event.context`: row changes captured by the ORM (at flush) or by a bulk
statement (when it runs), and :func:`signalbus.emit` events (when emitted).

Rules:

* the values are normalised with the events' rules (:mod:`signalbus.events`) when the
  context is made: a value that is not JSON raises
  :class:`~signalbus.UnserialisableValue` naming its key, before any change is made;
* nested contexts merge, the inner keys overriding the outer ones, until the inner
  block ends;
* the context is scoped to the current thread or asyncio task (a context variable);
* a row changed several times in one transaction carries the context of its first
  change (as ``occurred_at`` is the time of its first change).

:func:`current_context` returns the context active here and now (what trigger capture
sets on the transaction for PostgreSQL triggers).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .events import EMPTY, FrozenDict, normalise_payload

__all__ = ["context", "current_context", "enter", "leave"]

F = TypeVar("F", bound=Callable[..., Any])

_context: contextvars.ContextVar[FrozenDict] = contextvars.ContextVar(
    "signalbus_context", default=EMPTY
)


def current_context() -> FrozenDict:
    """The context active here and now: a read-only mapping, empty outside any
    :func:`context` block."""
    return _context.get()


class context:  # noqa: N801 - used like contextlib's lower-case context managers
    """Attach ``values`` to every event captured while active.

    Use as a context manager or a decorator::

        with signalbus.context(actor=user.email, request_id=request_id):
            db.session.add(order)
            db.session.commit()

        @signalbus.context(actor="nightly-import")
        def import_users(rows): ...

    Remember that ORM changes are captured at flush: flush or commit inside the block.
    """

    def __init__(self, **values: Any) -> None:
        self.values: FrozenDict = normalise_payload(values, "signalbus.context()")
        self._tokens: list[contextvars.Token[FrozenDict]] = []

    def __enter__(self) -> FrozenDict:
        outer = _context.get()
        merged = FrozenDict({**outer, **self.values}) if outer else self.values
        self._tokens.append(_context.set(merged))
        return merged

    def __exit__(self, *exc: object) -> None:
        _context.reset(self._tokens.pop())

    def __call__(self, fn: F) -> F:
        values = self.values
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _entered(values):
                    return await fn(*args, **kwargs)

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _entered(values):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]


def enter(values: Mapping[str, Any], what: str) -> contextvars.Token[FrozenDict]:
    """Merge ``values`` into the current context until :func:`leave` (for hooks that
    cannot wrap a block, such as Flask's ``before_request``/``teardown_request``).

    ``what`` names the values' origin in errors.
    """
    if not isinstance(values, Mapping):
        raise TypeError(
            f"{what} must return a mapping of context values (e.g. {{'actor': ...}}), "
            f"not {type(values).__name__}"
        )
    normalised = normalise_payload(values, what)
    outer = _context.get()
    return _context.set(FrozenDict({**outer, **normalised}) if outer else normalised)


def leave(token: contextvars.Token[FrozenDict]) -> None:
    """Restore the context :func:`enter` replaced."""
    try:
        _context.reset(token)
    except ValueError:
        # the token belongs to another context (a teardown run elsewhere): that
        # context's values end with it
        pass


def _entered(values: FrozenDict) -> context:
    # a fresh manager per call (one decorated function may run in many threads at
    # once), reusing the values normalised when the decorator was made
    made = context.__new__(context)
    made.values = values
    made._tokens = []
    return made
