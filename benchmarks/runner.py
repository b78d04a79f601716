"""The interleaved loop and its statistics.

Configurations are paired batch by batch: for batch ``b`` every configuration runs its
batch ``b`` (same values, its own table) one after the other, in an order shuffled
anew for every batch (seeded, so runs are alike). Plain rotation is not enough: it
keeps the cyclic order, so one configuration would always run right after the same
other one and inherit its after-effects (a SQLite page cache invalidated by another
connection, a garbage collection its neighbour's allocations triggered).

A repeat is one pass over all batches (``rows`` rows per configuration); each repeat
gives one ratio per configuration: the sum of its batch times over the sum of its
floor's. The report gives the median and the min–max of those ratios: the spread is
the noise of this machine during the run.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = ["Interleaved", "Ratio", "Timed", "ratio_of", "run_interleaved"]


class Timed(Protocol):
    """What the loop needs of a configuration."""

    key: str
    floor: str | None

    def prepare(self, repeat: int, rows: int) -> None: ...

    def batch(self, index: int, repeat: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class Ratio:
    """The ratios of one configuration to its floor, one per repeat."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def ratio_of(values: Sequence[float], floors: Sequence[float]) -> Ratio:
    """Pairwise ratios of two equally long series."""
    return Ratio(tuple(v / f for v, f in zip(values, floors, strict=True)))


@dataclasses.dataclass
class Interleaved:
    """The result of one interleaved run: seconds per configuration per repeat."""

    totals: dict[str, list[float]]
    rows: int
    batches: int

    def ratio(self, key: str, floor: str) -> Ratio:
        """The per-repeat ratios of ``key`` against ``floor``."""
        return ratio_of(self.totals[key], self.totals[floor])

    @property
    def repeats(self) -> int:
        """How many repeats were measured."""
        return len(next(iter(self.totals.values()), []))

    def rows_per_second(self, key: str) -> float:
        """The median throughput of one configuration (rows/s)."""
        return self.rows / statistics.median(self.totals[key])


def run_interleaved(
    workloads: Sequence[Timed],
    *,
    rows: int,
    batch_size: int,
    repeats: int,
    warmup_batches: int = 5,
    progress: Callable[[str], None] | None = None,
    deadline: float | None = None,
    min_repeats: int = 3,
) -> Interleaved:
    """Run every workload's batches interleaved; return their times per repeat.

    With ``deadline`` (a ``time.perf_counter()`` value), repeats beyond ``min_repeats``
    are only started when the last one's duration says the next one ends before it:
    on a loaded machine the run gets fewer repeats instead of overrunning its budget.
    """
    if rows % batch_size:
        raise ValueError(f"rows ({rows}) must be a multiple of the batch size ({batch_size})")
    batches = rows // batch_size
    clock = time.perf_counter
    totals: dict[str, list[float]] = {w.key: [] for w in workloads}
    order = list(workloads)
    shuffle = random.Random(20_000).shuffle
    last = 0.0
    for repeat in range(-1, repeats):
        began = clock()
        if (deadline is not None and repeat >= min_repeats and began + last > deadline):
            if progress is not None:
                progress(f"stopping after {repeat} repeats: time budget")
            break
        # repeat -1 warms up: compiled-statement caches, plans, connection pools
        count = warmup_batches if repeat < 0 else batches
        for w in workloads:
            w.prepare(repeat, rows)
        gc.collect()
        spent = dict.fromkeys(totals, 0.0)
        for b in range(count):
            shuffle(order)
            for w in order:
                t0 = clock()
                w.batch(b, repeat)
                spent[w.key] += clock() - t0
        if repeat >= 0:
            for key, seconds in spent.items():
                totals[key].append(seconds)
            if progress is not None:
                progress(f"repeat {repeat + 1}/{repeats} done")
        last = clock() - began
    return Interleaved(totals, rows, batches)
