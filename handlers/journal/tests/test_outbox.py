"""The journal under SIGNALBUS_DELIVERY="outbox": the worker writes the lines."""

from __future__ import annotations

import json


def test_the_worker_journals_the_events(make_host, signalbus_drain):
    host = make_host(SIGNALBUS_DELIVERY="outbox")
    uid = host.register("ann@example.com")
    host.delete(uid)
    assert host.lines() == []  # nothing is delivered in the committing process
    stats = signalbus_drain(host.app)
    records = [json.loads(line) for line in host.lines()]
    assert [(r["signal"], r["pk"], r["attempt"]) for r in records] == [
        ("user_registered", uid, 1), ("user_deleted", uid, 1)]
    assert stats.delivered == 2
