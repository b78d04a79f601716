"""A writer killed in the middle of a line: the next append leaves only whole lines."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
from pathlib import Path

from signalbus_journal import Journal, encode, read_lines


def _die_mid_line(path: str, half_line: bytes) -> None:
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, half_line)
    os.kill(os.getpid(), signal.SIGKILL)  # the kernel releases the lock, the fd, nothing else


def test_the_next_append_cuts_the_torn_tail(tmp_path: Path, event_factory):
    journal = Journal(tmp_path)
    first, lost, after = (event_factory(id=n) for n in (1, 2, 3))
    path = journal.append(first)
    torn = encode(lost)[:40]

    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_die_mid_line, args=(str(path), torn))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    assert path.read_bytes() == encode(first) + torn

    bad: list[tuple[Path, int]] = []
    assert [line.event for line in read_lines([path], bad)] == [first]
    assert bad == [(path, 2)]  # readers skip the torn tail

    journal.append(after)
    assert path.read_bytes() == encode(first) + encode(after)
    assert [json.loads(line)["data"]["id"] for line in path.read_bytes().splitlines()] == [1, 3]


def test_a_file_that_is_only_a_torn_line(tmp_path: Path, event_factory):
    journal = Journal(tmp_path)
    event = event_factory()
    path = journal.path_for(event.occurred_at)
    path.write_bytes(b'{"id": "no newline, ' + b"x" * 100_000)  # longer than one read chunk
    journal.append(event)
    assert path.read_bytes() == encode(event)


def test_a_long_torn_tail_after_whole_lines(tmp_path: Path, event_factory):
    journal = Journal(tmp_path)
    first, after = event_factory(id=1), event_factory(id=2)
    path = journal.append(first)
    with open(path, "ab") as fh:
        fh.write(b"y" * 200_000)
    journal.append(after)
    assert path.read_bytes() == encode(first) + encode(after)
