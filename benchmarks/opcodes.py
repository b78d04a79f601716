"""Count the Python bytecodes one configuration runs per row, next to its floor's.

``python -m benchmarks.opcodes --config signalbus [--db sqlite] [--batches 10]`` runs
the configuration's batches and its floor's (after a warm-up) under a tracer that
counts every bytecode executed, per function, and prints the bytecodes per row of each,
the difference, and the functions whose counts differ most.

Timings on a shared 2-core machine move by ±5–10 % between runs; bytecode counts do
not move at all, so a change to capture's hot path can be judged in seconds before it
is timed by ``make bench``. A bytecode is not a unit of time (a ``BINARY_SUBSCR`` on a
dict costs less than a ``CALL`` into C that formats a datetime), so this finds where
the work is; ``make bench`` says what it costs.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from types import FrameType
from typing import Any

from .databases import open_database
from .workloads import Workload, sqlalchemy_workloads

__all__ = ["count", "main"]

Key = tuple[str, int, str]


def count(workload: Workload, batches: int) -> collections.Counter[Key]:
    """Bytecodes executed per function by ``batches`` batches of ``workload``."""
    workload.prepare(0, workload.batch_size * (batches + 5))
    for i in range(3):  # warm-up: plans, caches, statement compilation
        workload.batch(i, 0)
    counts: collections.Counter[Key] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            path = code.co_filename
            if path.startswith("<sqlalchemy generated __init__"):
                path = "<sqlalchemy generated __init__>"  # one per model: the same code
            else:
                path = os.path.relpath(path.split("site-packages/")[-1])
            counts[(path, code.co_firstlineno, code.co_name)] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for i in range(3, 3 + batches):
            workload.batch(i, 0)
    finally:
        sys.settrace(None)
    return counts


def main(argv: list[str] | None = None) -> None:
    """Print the bytecodes per row of a configuration and of its floor."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.opcodes")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--config", default="signalbus",
                        help="a configuration with a floor: signalbus, signalbus-update, "
                             "unbound, tutorial")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    with open_database(args.db) as db:
        workloads = {w.key: w for w in sqlalchemy_workloads(db, args.batch_size)}
        workload = workloads.get(args.config)
        if workload is None or workload.floor is None:
            with_floor = sorted(k for k, w in workloads.items() if w.floor is not None)
            raise SystemExit(f"--config {args.config!r}: choose one of {', '.join(with_floor)}")
        floor = count(workloads[workload.floor], args.batches)
        measured = count(workload, args.batches)
    rows = args.batches * args.batch_size
    total_floor, total = sum(floor.values()) / rows, sum(measured.values()) / rows
    print(f"bytecodes per row: {workload.floor} {total_floor:.0f}, {args.config} "
          f"{total:.0f}, difference {total - total_floor:+.0f} "
          f"({total / total_floor:.3f}×)")
    diff = sorted(((measured[k] - floor[k]) / rows, k) for k in set(floor) | set(measured))
    print(f"\n{'per row':>9}  function")
    for change, (path, line, name) in sorted(diff, key=lambda d: -abs(d[0]))[:args.top]:
        if abs(change) >= 0.5:
            print(f"{change:+9.1f}  {name} ({path}:{line})")


if __name__ == "__main__":
    main()
