"""What each stage of inline delivery costs, timed with the cycle collector off.

``python -m benchmarks.stages [--config signalbus] [--against buffer] [--db sqlite]
[--batches 100]`` times the configuration against its floor (or ``--against`` another
configuration, such as the hand-written after-commit buffer), interleaved batch by
batch (the floor first in every other batch) with :mod:`gc` disabled during the timed
batches, once per stage (each in a process of its own, since a stage replaces functions
before the bus is attached):

``attached``
    the session listeners run, capture keeps nothing (``after_flush`` does nothing);
``capture``
    rows are captured into the transaction's frame; the committed frame is dropped;
``build``
    ... and its events are made, but not delivered;
``all``
    ... and delivered to the 3 no-op receivers: what ``make bench`` times.

Each stage's ratio minus the one before is that stage's share of the floor. With the
collector on, a collection lands in whichever batch allocates the object that crosses
its threshold, and the ratios of one run spread by ±0.05; with it off they spread by
±0.01, which is what judging a change of 1 % needs. The collector's own cost is left
out here (``make bench`` keeps it in). Instruction counts (cachegrind) do not replace
this: Python's own dispatch runs fewer instructions per cycle than the C code of the
floor, so an instruction ratio understates a time ratio (1.118 against 1.19 for the
update, on the same code).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import time

from .databases import open_database
from .workloads import Workload, sqlalchemy_workloads

__all__ = ["STAGES", "main", "ratios_collector_off"]

STAGES = ("attached", "capture", "build", "all")


def _apply(stage: str) -> None:
    """Replace what the stage leaves out (before any bus is attached)."""
    from signalbus import delivery
    from signalbus.capture import listeners

    if stage == "attached":
        listeners.Tracker._after_flush = lambda self, session, flush_context: None  # type: ignore[method-assign]
    elif stage == "capture":
        delivery.Inline.committed = lambda self, events: None  # type: ignore[method-assign]
    elif stage == "build":
        def build_only(self: delivery.Inline, events: object) -> None:
            for _ in events:  # type: ignore[attr-defined]
                pass
        delivery.Inline.committed = build_only  # type: ignore[method-assign]


def ratios_collector_off(work: Workload, floor: Workload, batches: int,
                         repeats: int) -> list[float]:
    """Per repeat, the time of ``batches`` batches of ``work`` over its ``floor``'s,
    interleaved (the floor first in every other batch), the collector off while they
    run. Each repeat refills the tables and warms up on batches past the timed ones."""
    ratios = []
    clock = time.perf_counter
    for repeat in range(repeats):
        for w in (work, floor):
            w.prepare(repeat, (batches + 3) * w.batch_size)
            for i in range(3):  # warm-up: plans, statement caches
                w.batch(batches + i, repeat)
        gc.collect()
        gc.disable()
        try:
            spent = {work.key: 0.0, floor.key: 0.0}
            for b in range(batches):
                for w in ((work, floor) if b % 2 else (floor, work)):
                    t0 = clock()
                    w.batch(b, repeat + 1)
                    spent[w.key] += clock() - t0
        finally:
            gc.enable()
        ratios.append(spent[work.key] / spent[floor.key])
    return ratios


def measure(config: str, db_kind: str, batches: int, repeats: int, stage: str,
            against: str | None = None) -> list[float]:
    """The per-repeat ratios of ``config`` to ``against`` (its floor by default) at
    ``stage``."""
    _apply(stage)
    with open_database(db_kind) as db:
        workloads = {w.key: w for w in sqlalchemy_workloads(db, 100)}
        work = workloads[config]
        against = against or work.floor
        if against is None:
            raise SystemExit(f"--config {config!r} has no floor: name one with --against")
        if against not in workloads:
            raise SystemExit(f"--against {against!r}: no such configuration; choose from "
                             f"{', '.join(workloads)}")
        return ratios_collector_off(work, workloads[against], batches, repeats)


def main(argv: list[str] | None = None) -> None:
    """Print the ratio of each stage and its share."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--config", default="signalbus",
                        help="signalbus or signalbus-update (an inline configuration)")
    parser.add_argument("--against", default=None,
                        help="the configuration to time it against (default its floor; "
                             "buffer or update-buffer: the hand-written after-commit buffer)")
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # one stage, in this process: print the ratios
        print(" ".join(f"{r:.4f}" for r in measure(args.config, args.db, args.batches,
                                                      args.repeats, args.stage, args.against)))
        return
    print(f"{args.config} against {args.against or 'its floor'}, {args.db}, collector off "
          "during the timed "
          f"batches; median (min-max) of {args.repeats} repeats of {args.batches} batches")
    before = 1.0
    for stage in STAGES:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.stages", "--config", args.config,
             *(["--against", args.against] if args.against else []), "--db", args.db,
             "--batches", str(args.batches), "--repeats", str(args.repeats), "--stage", stage],
            check=True, capture_output=True, text=True).stdout
        ratios = [float(x) for x in out.split()]
        median = statistics.median(ratios)
        print(f"  {stage:9} {median:.3f}× ({min(ratios):.3f}-{max(ratios):.3f})  "
              f"stage {median - before:+.3f}")
        before = median


if __name__ == "__main__":
    main()
