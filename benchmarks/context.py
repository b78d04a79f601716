"""What a benchmark section is given: the run's settings and where to report progress.

Sections other than the built-in ones (the outbox worker's delivery rate and latency in
``benchmarks/outbox_worker.py``) receive a :class:`Context` and return report rows::

    def run(context: Context) -> list[Row]: ...

The runner calls ``benchmarks.outbox_worker.run(context)`` when that module exists.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

__all__ = ["Context"]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Context:
    """The settings of one ``python -m benchmarks`` run."""

    rows: int
    """Rows per configuration per repeat (20,000 by default)."""
    batch_size: int
    """Rows per transaction (100)."""
    repeats: int
    """Interleaved repeats; each gives one ratio per configuration."""
    memory_rows: int
    """Rows of the single large transaction whose peak memory is measured (100,000)."""
    postgres_url: str | None
    """The PostgreSQL server, or ``None`` when PostgreSQL is not part of this run.

    Work in a schema of your own (``signalbus_bench_...``) and drop it at the end."""
    started: float = 0.0
    """``time.perf_counter()`` when the run began."""
    budget: float = 540.0
    """Seconds the whole run should take at most; sections stop repeating to keep it."""
    quick: bool = False
    """A smoke run (``--quick``): small numbers, figures not meant to be quoted."""
    only: frozenset[str] | None = None
    """``--only``: the configuration keys to run (their floors and the A/A copy of the
    floor run too); ``None`` runs every configuration."""
    progress: Callable[[str], None] = _stderr
    """Where to say what is running (stderr; the table goes to stdout)."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """Lines added under the table (method notes, what was not measured and why)."""

    def deadline(self, share: float) -> float:
        """The ``perf_counter()`` time by which ``share`` of the budget is used."""
        return self.started + share * self.budget
