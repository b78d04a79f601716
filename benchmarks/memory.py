"""Peak memory of one large transaction, in a fresh process per configuration.

``python -m benchmarks.memory --db sqlite|postgresql --url URL [--schema S]
--config floor|signalbus|outbox --rows 100000 --measure tracemalloc|rss`` creates its table,
runs one warm-up transaction of 100 rows (so that compiled-statement caches and
signalbus's plans exist in every configuration), then measures one transaction of
``--rows`` inserts: building the objects, ``add_all``, the commit, and for signalbus the
inline delivery to 3 no-op receivers (``signalbus``) or the outbox rows written inside
the transaction (``outbox``). It prints one JSON object.

Two measures, each in its own process because tracemalloc's bookkeeping would inflate
the resident size:

* ``tracemalloc``: the peak of Python-allocated memory during the transaction, above
  what was allocated before it (exact, and what the ratio is taken from);
* ``rss``: how much the process's peak resident set size (``ru_maxrss``) grew during the
  transaction (coarser: it includes allocator slack, but it is what the OS sees).

Every configuration holds the list of their objects until the commit returns, as code
that builds rows in a loop does.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tracemalloc
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from .databases import FloorUser, OutboxUser, SignalbusUser, make_engine, row_values

__all__ = ["CONFIGS", "main"]

CONFIGS = {"floor": FloorUser, "signalbus": SignalbusUser, "outbox": OutboxUser}
"""The configurations this module can measure, by name."""


def _maxrss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _transaction(factory: sessionmaker[Session], model: type[Any], start: int,
                 rows: int) -> None:
    with factory() as session:
        users = [model(**row_values(i)) for i in range(start, start + rows)]
        session.add_all(users)
        session.commit()
        del users


def measure(kind: str, url: str, schema: str | None, config: str, rows: int,
            how: str) -> dict[str, Any]:
    """Run the warm-up and the measured transaction; return the figures."""
    engine = make_engine(kind, url, schema)
    model = CONFIGS[config]
    model.__table__.drop(engine, checkfirst=True)  # type: ignore[attr-defined]
    model.__table__.create(engine)  # type: ignore[attr-defined]
    factory = sessionmaker(engine)
    if config != "floor":
        from .workloads import attach_signalbus

        attach_signalbus(factory, "inline" if config == "signalbus" else "outbox")
    _transaction(factory, model, 0, 100)
    gc.collect()
    out: dict[str, Any] = {"config": config, "rows": rows, "measure": how}
    if how == "tracemalloc":
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        _transaction(factory, model, 100, rows)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_bytes"] = peak - base
    else:
        before = _maxrss_bytes()
        _transaction(factory, model, 100, rows)
        out["peak_bytes"] = _maxrss_bytes() - before
        out["maxrss_bytes"] = _maxrss_bytes()
    model.__table__.drop(engine)  # type: ignore[attr-defined]
    engine.dispose()
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse the options, measure, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--schema")
    parser.add_argument("--config", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--measure", choices=["tracemalloc", "rss"], required=True)
    args = parser.parse_args(argv)
    result = measure(args.db, args.url, args.schema, args.config, args.rows, args.measure)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
