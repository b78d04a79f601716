"""Capture: SQLAlchemy row changes, coalesced per transaction, become events.

Data flows one way through its parts, each readable alone:

* :mod:`.plans` — what the bindings of a mapped class need captured from its rows;
* :mod:`.frames` — row changes, the rules that merge them, the buffer of one
  transaction (no database needed to test them);
* :mod:`.snapshots` — one row's values, normalised, become a row change;
* :mod:`.build` — a committed frame's changes become the events of their bindings;
* :mod:`.listeners` — the SQLAlchemy hooks that feed the frames, and their lifetime.

Capture knows nothing of delivery modes: it hands committed events to a sink (the
bus runtime), offering it a ``prepare`` call inside the transaction, right before the
database commit, for sinks that store events (the outbox).
"""

from .build import build_events as build_events
from .build import new_ids as new_ids
from .frames import Frame as Frame
from .frames import RowChange as RowChange
from .frames import merge as merge
from .listeners import Sink as Sink
from .listeners import attach_session as attach_session
from .listeners import emit_into as emit_into
from .listeners import session_state as session_state
from .listeners import sync_bindings as sync_bindings
from .plans import plans as plans

__all__ = [
    "Frame",
    "RowChange",
    "Sink",
    "attach_session",
    "build_events",
    "emit_into",
    "merge",
    "new_ids",
    "plans",
    "session_state",
    "sync_bindings",
]
