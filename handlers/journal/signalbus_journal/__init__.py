"""signalbus-journal: an append-only JSON Lines journal of every delivered event.

A signalbus plugin (entry point ``journal`` in the ``signalbus.plugins`` group) that
appends each delivered event to ``SIGNALBUS_JOURNAL_DIR/<YYYY-MM-DD>.jsonl``, and a
``flask signalbus journal export`` command to read it back. See the package README.
"""

from __future__ import annotations

from .journal import Journal as Journal
from .journal import Line as Line
from .journal import day_files as day_files
from .journal import encode as encode
from .journal import read_lines as read_lines
from .plugin import Settings as Settings
from .plugin import journal_dir as journal_dir
from .plugin import setup as setup

__all__ = [
    "Journal",
    "Line",
    "Settings",
    "day_files",
    "encode",
    "journal_dir",
    "read_lines",
    "setup",
]
