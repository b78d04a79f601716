"""``muted()``: stop signals from being captured, for a block, a function or a process.

Muting is judged when a change is captured (at flush, or at :func:`signalbus.emit`):
a muted change is never stored nor delivered, even if the transaction commits after
the block has ended. It is scoped to the current thread or asyncio task through a
context variable. ``SIGNALBUS_MUTED`` (app config, or the environment variable of the
same name for a whole process such as a data load) mutes every signal when true
(``1``, ``true``, ``yes``, ``all``), or the comma-separated names it lists.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import blinker

from .settings import ALL
from .settings import parse_muted as parse_muted

__all__ = ["active", "is_muted", "muted", "parse_muted"]

F = TypeVar("F", bound=Callable[..., Any])

_muted: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "signalbus_muted", default=frozenset()
)


def env_muted() -> frozenset[str]:
    """Names muted by the ``SIGNALBUS_MUTED`` environment variable (read on every call)."""
    return parse_muted(os.environ.get("SIGNALBUS_MUTED"))


def active(extra: frozenset[str] = frozenset()) -> frozenset[str]:
    """The names muted here and now: the context's, the environment's and ``extra``."""
    current = _muted.get()
    env = os.environ.get("SIGNALBUS_MUTED")
    if env:
        current = current | parse_muted(env)
    return current | extra if extra else current


def is_muted(name: str, names: frozenset[str]) -> bool:
    """Whether ``name`` is in a set of muted names from :func:`active`."""
    return bool(names) and (ALL in names or name in names)


class muted:  # noqa: N801 - used like contextlib's lower-case context managers
    """Mute every signal, or only the ones named, while active.

    Use as a context manager or a decorator::

        with signalbus.muted():
            load_fixtures()
            db.session.commit()

        @signalbus.muted("user_registered")
        def import_users(rows): ...

    Remember that muting is judged at flush: commit (or flush) inside the block.
    """

    def __init__(self, *signals: str | blinker.NamedSignal) -> None:
        names = [s if isinstance(s, str) else s.name for s in signals]
        self.names = frozenset(names) if names else frozenset({ALL})
        self._tokens: list[contextvars.Token[frozenset[str]]] = []

    def __enter__(self) -> muted:
        self._tokens.append(_muted.set(_muted.get() | self.names))
        return self

    def __exit__(self, *exc: object) -> None:
        _muted.reset(self._tokens.pop())

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with muted(*self.names):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


@contextmanager
def unmuted() -> Iterator[None]:
    """Clear the context's muting inside the block (used by the test plugin)."""
    token = _muted.set(frozenset())
    try:
        yield
    finally:
        _muted.reset(token)
