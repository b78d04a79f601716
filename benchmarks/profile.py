"""Profile one configuration: where its time goes, next to the floor's.

``python -m benchmarks.profile --config signalbus [--db sqlite] [--rows 20000]`` runs the
configuration's batches (after a warm-up) under pyinstrument (``pip install -e
'.[bench]'``) and prints the call tree, then the share of time spent in each signalbus
function (self time, summed over the tree). ``--config floor`` profiles the floor, to
compare. Nothing is interleaved here: this is for finding causes, not for figures.
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Any

from .databases import open_database
from .workloads import sqlalchemy_workloads

__all__ = ["main"]


def _self_times(frame: Any, out: collections.Counter[str]) -> None:
    key = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
    out[key] += frame.total_self_time
    for child in frame.children:
        _self_times(child, out)


def _in_package(frame: Any, package: str, out: collections.Counter[str]) -> None:
    """Total time of the outermost frames whose file is in ``package``."""
    path = (frame.file_path or "").replace("\\", "/")
    if f"/{package}/" in path:
        out[frame.function] += frame.time
        return
    for child in frame.children:
        _in_package(child, package, out)


def main(argv: list[str] | None = None) -> None:
    """Profile one configuration and print the tree and the signalbus shares."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--config", default="signalbus",
                        help="a configuration key: floor, tutorial, signalbus, unbound, "
                             "update-floor, signalbus-update")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.0005,
                        help="pyinstrument sampling interval in seconds")
    parser.add_argument("--tree", action="store_true", help="also print the call tree")
    args = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("pyinstrument is missing: pip install -e '.[bench]'") from None
    with open_database(args.db) as db:
        workloads = {w.key: w for w in sqlalchemy_workloads(db, args.batch_size)}
        if args.config not in workloads:
            raise SystemExit(f"--config {args.config!r} is unknown here; choose from "
                             f"{', '.join(workloads)}")
        w = workloads[args.config]
        w.prepare(0, args.rows)
        for b in range(5):
            w.batch(b, -1)
        w.prepare(0, args.rows)
        profiler = Profiler(interval=args.interval)
        profiler.start()
        for b in range(args.rows // args.batch_size):
            w.batch(b, 0)
        session = profiler.stop()
    if args.tree:
        print(profiler.output_text(unicode=True, color=False, show_all=False))
    root = session.root_frame()
    total = root.time if root is not None else 0.0
    print(f"{args.config} on {db.name}: {total:.3f} s sampled over {args.rows} rows")
    outer: collections.Counter[str] = collections.Counter()
    if root is not None:
        _in_package(root, "signalbus", outer)
    spent = sum(outer.values())
    print(f"\ntime inside signalbus (outermost signalbus frames): {spent:.3f} s "
          f"= {100 * spent / total if total else 0:.1f}% of the run")
    for name, t in outer.most_common(12):
        print(f"  {100 * t / total:5.1f}%  {name}")
    selfs: collections.Counter[str] = collections.Counter()
    if root is not None:
        _self_times(root, selfs)
    print("\nself time by function (top 25, whole run):")
    for name, t in selfs.most_common(25):
        print(f"  {100 * t / total:5.1f}%  {name}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
