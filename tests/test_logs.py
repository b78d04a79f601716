"""Every log line about an event carries its id as structured data (``event_id``,
``signal``, ``receiver`` on the record), inline and from the outbox worker, also the
lines a receiver logs on its own logger (through ``signalbus.logs.EventFilter``)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import signalbus.logs
from signalbus import Event
from signalbus.outbox.worker import drain
from tests import webhost
from tests.webhost import FAIL, PERMANENT, join

pytestmark = pytest.mark.signalbus_receiver_errors("log")

plugin_log = logging.getLogger("tests.some_plugin")


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(signalbus.logs.EventFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def chatty(sender: Any, event: Event, **kw: Any) -> None:
    plugin_log.warning("sending the welcome mail")


@pytest.mark.parametrize("mode", ["inline", "outbox"])
def test_lines_about_an_event_carry_its_id(database_url: str, mode: str) -> None:
    keep = Keep()
    for name in ("signalbus", "tests.some_plugin"):
        logging.getLogger(name).addHandler(keep)
    try:
        with webhost.host(database_url, SIGNALBUS_DELIVERY=mode) as app:
            app.extensions["signalbus"].runtime(app).connect(
                "web_member_joined", chatty, name="tests.test_logs:chatty")
            FAIL.add("a@example.com")
            PERMANENT.add("b@example.com")
            join(app, "a@example.com", "b@example.com")
            if mode == "outbox":
                drain(app)
            ids = {r.getMessage().split(" event ")[1].split()[0]
                   for r in keep.records if " event " in r.getMessage()}
    finally:
        for name in ("signalbus", "tests.some_plugin"):
            logging.getLogger(name).removeHandler(keep)
    assert len(ids) == 2
    about = [r for r in keep.records if r.name == "signalbus" and " event " in r.getMessage()]
    assert about and all(r.event_id in ids for r in about)  # type: ignore[attr-defined]
    assert all(r.event_id in r.getMessage() for r in about)  # type: ignore[attr-defined]
    assert {r.receiver for r in about} == {"tests.webhost:notify_slack"}  # type: ignore[attr-defined]
    mine = [r for r in keep.records if r.name == "tests.some_plugin"]
    assert len(mine) == 2
    assert {r.event_id for r in mine} == ids  # type: ignore[attr-defined]
    assert {r.receiver for r in mine} == {"tests.test_logs:chatty"}  # type: ignore[attr-defined]
    assert {r.signal for r in mine} == {"web_member_joined"}  # type: ignore[attr-defined]


def test_lines_about_no_event_say_none() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    signalbus.logs.EventFilter().filter(record)
    assert (record.event_id, record.signal, record.receiver) == (None, None, None)  # type: ignore[attr-defined]
