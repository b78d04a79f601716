"""Health checks for cron monitors and process supervisors.

* **Lag**: ``signalbus status --fail-if-lag SECONDS`` exits 1 when the oldest pending
  event or delivery waits longer than that (:func:`check_lag`); it reads the pending
  rows only, so a monitor can run it every minute on any outbox.
* **Worker liveness**: ``signalbus worker --heartbeat-file PATH`` touches ``PATH`` at
  every round of its loop (at least every ``SIGNALBUS_OUTBOX_POLL`` seconds while idle,
  after every batch while busy); ``signalbus health --heartbeat-file PATH --max-age
  SECONDS`` exits 1 when it has not been touched for longer
  (:func:`check_heartbeat`). Give ``--max-age`` more than the longest batch (a slow
  receiver holds the round) and more than the poll interval. A worker waiting for a
  database that is down still beats: restarting it would not help.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = ["Heartbeat", "check_heartbeat", "check_lag"]


class Heartbeat:
    """Touches ``path`` (creating it) when called, at most every ``every`` seconds."""

    def __init__(self, path: str | os.PathLike[str], every: float = 1.0) -> None:
        self.path = os.fspath(path)
        self.every = every
        self._last = -float("inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        try:
            with open(self.path, "a"):
                pass
            os.utime(self.path)
        except OSError:  # a full or read-only disk: the check will say the beat stopped
            pass


def check_heartbeat(path: str | os.PathLike[str], max_age: float) -> tuple[bool, str]:
    """Whether ``path`` was touched within ``max_age`` seconds; a message saying so."""
    path = os.fspath(path)
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False, (f"no heartbeat file {path}: is the worker running with "
                       f"--heartbeat-file {path}?")
    if age > max_age:
        return False, (f"the worker's heartbeat {path} is {age:.1f}s old (more than "
                       f"{max_age:g}s): its loop is stuck or it stopped")
    return True, f"the worker's heartbeat {path} is {age:.1f}s old"


def check_lag(engine: Engine, max_age: float) -> tuple[bool, dict[str, Any]]:
    """Whether the oldest pending event or delivery waits at most ``max_age`` seconds;
    the figures (:func:`signalbus.outbox.browse.lag`)."""
    from .outbox import browse

    found = browse.lag(engine)
    age = found["oldest_pending_age_seconds"]
    return (age is None or age <= max_age), found
