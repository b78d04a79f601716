"""The journal files: appending one event as one line, and reading lines back.

Layout: ``<directory>/<YYYY-MM-DD>.jsonl``, one file per UTC day of ``event.occurred_at``,
one ``Event.to_dict()`` JSON object per line (UTF-8, ``\\n``-terminated).

Why appends are safe (:meth:`Journal.append`):

* The file is opened with ``O_APPEND``: the kernel moves to the end of the file and
  writes in one step, so two processes appending at once never overwrite each other.
* The whole line is written while holding an exclusive ``flock`` on the file. On a local
  file system one ``write`` of a line to an ``O_APPEND`` descriptor already lands in one
  piece; the lock keeps that true when a write comes back short (a full disk, a signal)
  and has to be continued, and when the file lives on a file system that splits writes.
  Readers need no lock: they only ever see whole lines plus, at worst, a tail in progress.
* A writer killed in the middle of a line leaves a tail without ``\\n``. The next writer,
  under the lock, cuts that torn tail off before appending, so the file holds only whole
  lines. (The lost fragment was never acknowledged: the outbox delivers that event again,
  and inline delivery had lost it with the crashed process anyway.) Readers skip and
  count a torn tail they meet before that.

``fcntl.flock`` is POSIX-only; where it is missing (Windows) the journal relies on
``O_APPEND`` alone.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from signalbus import Event

__all__ = ["Journal", "Line", "file_date", "read_lines"]

FILE_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.jsonl$")
_CHUNK = 64 * 1024


def encode(event: Event) -> bytes:
    """The journal line of ``event``: compact JSON of ``event.to_dict()`` and ``\\n``."""
    text = json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


class Journal:
    """Appends events to the day files of one directory (one per app)."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        """Where the ``YYYY-MM-DD.jsonl`` files are written (created when missing)."""
        self.fsync = fsync
        """``fsync`` after each line: survives a power loss, costs a disk flush per event."""

    def path_for(self, occurred_at: dt.datetime) -> Path:
        """The file of an event that occurred at ``occurred_at`` (its UTC date)."""
        day = occurred_at.astimezone(dt.UTC).date() if occurred_at.tzinfo else occurred_at.date()
        return self.directory / f"{day.isoformat()}.jsonl"

    def __call__(self, sender: Any, event: Event, **kwargs: Any) -> None:
        """The receiver: append ``event``. An ``OSError`` propagates (and is retried)."""
        self.append(event)

    def append(self, event: Event) -> Path:
        """Append one event as one line; return the file written to."""
        path = self.path_for(event.occurred_at)
        _append_line(path, encode(event), fsync=self.fsync)
        return path


def _open(path: Path) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, flags, 0o644)


def _append_line(path: Path, line: bytes, *, fsync: bool) -> None:
    fd = _open(path)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close(), also when we crash
        _cut_torn_tail(fd)
        view = memoryview(line)
        while view:
            try:
                written = os.write(fd, view)
            except InterruptedError:  # pragma: no cover - retried by Python since 3.5
                continue
            if written == 0:
                raise OSError(errno.EIO, f"could not append to the journal file {path}")
            view = view[written:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _cut_torn_tail(fd: int) -> None:
    """Remove a last line without ``\\n`` (left by a writer that died mid-write)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


class Line:
    """One journal line read back: the raw bytes and the parsed object."""

    __slots__ = ("path", "raw", "record")

    def __init__(self, path: Path, raw: bytes, record: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw
        """The line as stored, with its ``\\n``."""
        self.record = record
        """The parsed ``Event.to_dict()``."""

    @property
    def occurred_at(self) -> dt.datetime:
        """The event's ``occurred_at``, timezone-aware."""
        return dt.datetime.fromisoformat(self.record["occurred_at"])

    @property
    def event(self) -> Event:
        """The line as an :class:`~signalbus.Event`."""
        return Event.from_dict(self.record)


def file_date(path: Path) -> dt.date | None:
    """The day a journal file holds, or ``None`` for a file that is not a day file."""
    match = FILE_RE.match(path.name)
    return dt.date.fromisoformat(match.group(1)) if match else None


def day_files(directory: Path, first: dt.date | None = None,
              last: dt.date | None = None) -> list[Path]:
    """The day files of ``directory`` from ``first`` to ``last`` (inclusive), in order."""
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.iterdir()):
        day = file_date(path)
        if day is None or (first is not None and day < first) or (
                last is not None and day > last):
            continue
        out.append(path)
    return out


def read_lines(paths: Iterable[Path], bad: list[tuple[Path, int]] | None = None
               ) -> Iterator[Line]:
    """The lines of ``paths``, in file order.

    A line that is not a JSON object (a torn tail a crashed writer left, before the next
    append cut it off) is skipped; ``(path, line number)`` is added to ``bad`` if given.
    """
    for path in paths:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                try:
                    if not raw.endswith(b"\n"):
                        raise ValueError("torn line")
                    record = json.loads(raw)
                    if not isinstance(record, dict):
                        raise ValueError("not an object")
                except ValueError:
                    if bad is not None:
                        bad.append((path, number))
                    continue
                yield Line(path, raw, record)
