"""Two processes appending at once: every line is whole, none is lost."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import uuid
from collections import Counter
from pathlib import Path

from signalbus_journal import Journal, read_lines

from signalbus import Event
from signalbus.events import FrozenDict

EVENTS_PER_WRITER = 2000
PAYLOAD = "x" * 6000  # lines of ~6 kB: larger than a pipe buffer, several pages each


def _writer(directory: str, writer: int, start: multiprocessing.synchronize.Barrier) -> None:
    journal = Journal(directory)
    at = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    events = [Event(id=str(uuid.uuid4()), signal="user_registered", model="app:User",
                    op="insert", pk=n, occurred_at=at,
                    data=FrozenDict(writer=writer, n=n, payload=PAYLOAD))
              for n in range(EVENTS_PER_WRITER)]
    start.wait()  # both writers begin together
    for event in events:
        journal.append(event)


def test_two_processes_appending_at_once(tmp_path: Path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, start)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    (path,) = tmp_path.iterdir()
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == 2 * EVENTS_PER_WRITER
    records = [json.loads(line) for line in lines]  # every line parses
    assert Counter(r["data"]["writer"] for r in records) == {1: EVENTS_PER_WRITER,
                                                             2: EVENTS_PER_WRITER}
    for writer in (1, 2):  # each writer's lines, complete and in its own order
        ns = [r["data"]["n"] for r in records if r["data"]["writer"] == writer]
        assert ns == list(range(EVENTS_PER_WRITER))
    assert len({r["id"] for r in records}) == 2 * EVENTS_PER_WRITER
    # the writers really interleaved (otherwise this test proves little)
    switches = sum(1 for a, b in zip(records, records[1:], strict=False)
                   if a["data"]["writer"] != b["data"]["writer"])
    assert switches > 1
    bad: list[tuple[Path, int]] = []
    assert len(list(read_lines([path], bad))) == 2 * EVENTS_PER_WRITER and bad == []
    assert os.stat(path).st_size == len(raw)
