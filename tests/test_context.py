"""``signalbus.context()``: values every captured event carries as ``event.context``
(ORM at flush, bulk at statement time, emit at emit time), in inline and outbox
delivery, SQLite and PostgreSQL; and the Flask helper ``SIGNALBUS_CONTEXT``."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, String, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import signalbus
import signalbus.outbox
from signalbus import ConfigurationError, Event, UnserialisableValue
from signalbus.bus import Runtime
from signalbus.contexts import current_context
from signalbus.events import EMPTY, FrozenDict


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "cx_tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20), default="open")


# -- the context manager and decorator ---------------------------------------------


def test_nesting_merges_and_the_block_end_restores():
    assert current_context() is EMPTY
    with signalbus.context(actor="ada", request_id="r1"):
        assert current_context() == {"actor": "ada", "request_id": "r1"}
        with signalbus.context(request_id="r2", job=7) as inner:
            assert inner == current_context() == {"actor": "ada", "request_id": "r2", "job": 7}
        assert current_context() == {"actor": "ada", "request_id": "r1"}
    assert current_context() == {}


def test_values_are_normalised_and_read_only():
    when = dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.UTC)
    with signalbus.context(at=when, amount=decimal.Decimal("1.50"), tags=["a", "b"]):
        ctx = current_context()
        assert isinstance(ctx, FrozenDict)
        assert ctx == {"at": "2024-01-02T03:04:00+00:00", "amount": "1.50", "tags": ("a", "b")}
        with pytest.raises(TypeError, match="read-only"):
            ctx["actor"] = "x"  # type: ignore[index]


def test_a_bad_value_is_refused_naming_its_key():
    with pytest.raises(UnserialisableValue, match=r"signalbus.context\(\)\['who'\]"):
        signalbus.context(who=object())
    assert current_context() == {}


def test_decorator_sync_and_async():
    @signalbus.context(actor="cron")
    def job(x: int) -> tuple[int, Any]:
        return x, current_context()

    @signalbus.context(actor="task")
    async def task() -> Any:
        return current_context()

    assert job(1) == (1, {"actor": "cron"})
    assert asyncio.run(task()) == {"actor": "task"}
    assert current_context() == {}


def test_the_context_is_per_thread():
    seen: list[Any] = []
    with signalbus.context(actor="main"):
        t = threading.Thread(target=lambda: seen.append(current_context()))
        t.start()
        t.join()
    assert seen == [{}]


def test_event_dicts_carry_the_context_and_old_rows_read_back_without_one():
    event = Event(id="1", signal="s", model=None, op="emit", pk=None, data=FrozenDict(),
                  occurred_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                  context=FrozenDict({"actor": "ada"}))
    stored = json.loads(json.dumps(event.to_dict()))
    assert stored["context"] == {"actor": "ada"}
    assert Event.from_dict(stored) == event
    del stored["context"]  # a row the first release stored
    assert Event.from_dict(stored).context is EMPTY


# -- events in both delivery modes --------------------------------------------------


@pytest.fixture
def started(mode_tables: Callable[[MetaData], Engine], attach_recording: Callable[..., Any]
            ) -> tuple[sessionmaker[Session], Callable[[], list[Event]], Runtime]:
    signalbus.bind(Ticket, "insert", "cx_opened")
    signalbus.bind(Ticket, "update", "cx_changed")
    signalbus.signal("cx_note")
    factory, got = attach_recording(mode_tables(Base.metadata))
    return factory, got, got.runtime


def test_orm_bulk_and_emit_events_carry_the_context(started):
    factory, got, runtime = started
    with factory() as s:
        with signalbus.context(actor="ada", request_id="r1"):
            s.add(Ticket(id=1, title="a"))
            s.flush()
            with signalbus.context(request_id="r2"):
                s.execute(update(Ticket).where(Ticket.id == 1).values(state="closed"))
                signalbus.emit("cx_note", {"n": 1}, session=s)
        s.add(Ticket(id=2, title="outside"))
        s.commit()  # after the blocks: what counts is when each change was captured
    with signalbus.context(actor="bob"):
        runtime.emit("cx_note", {"n": 2})  # no session: emitted now
    events = got()
    assert [(e.signal, e.source, dict(e.context)) for e in events] == [
        # the bulk update merged into the ORM insert: the first change's context
        ("cx_opened", "orm", {"actor": "ada", "request_id": "r1"}),
        ("cx_note", "emit", {"actor": "ada", "request_id": "r2"}),
        ("cx_opened", "orm", {}),
        ("cx_note", "emit", {"actor": "bob"}),
    ]
    assert events[0].data["state"] == "closed"
    assert events[2].context is EMPTY or events[2].context == {}


def test_a_row_changed_twice_keeps_its_first_changes_context(started):
    factory, got, _ = started
    with factory() as s, signalbus.muted():
        s.add(Ticket(id=1, title="a"))
        s.commit()
    with factory() as s:
        with signalbus.context(actor="bulk-job"):
            s.execute(update(Ticket).values(state="pending"))
        with signalbus.context(actor="ada"):
            s.get(Ticket, 1).title = "b"
            s.flush()
            s.execute(update(Ticket).where(Ticket.id == 1).values(state="closed"))
        s.commit()
    (event,) = got()
    assert (event.source, dict(event.context)) == ("bulk", {"actor": "bulk-job"})
    assert dict(event.changes) == {"title": ("a", "b"), "state": ("open", "closed")}


# -- Flask: SIGNALBUS_CONTEXT --------------------------------------------------------


class FlaskBase(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=FlaskBase)


class Comment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "cx_comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(100))


@pytest.fixture
def flask_app(fsa_config: dict[str, Any], delivery: str) -> Iterator[Flask]:
    from conftest import start_host  # the root conftest

    signalbus.bind(Comment, "insert", "cx_commented")
    app = Flask(__name__)
    app.config.update(
        fsa_config, SIGNALBUS_PLUGINS=[], SIGNALBUS_DELIVERY=delivery,
        SIGNALBUS_CONTEXT=lambda: {"actor": request.headers.get("X-User", "anonymous"),
                                   "path": request.path},
    )

    @app.post("/comments")
    def add() -> tuple[str, int]:
        seen = dict(current_context())
        db.session.add(Comment(body=request.get_data(as_text=True)))
        db.session.commit()
        g.seen = seen
        return json.dumps(seen), 201

    start_host(app, db, fresh=True)
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_flask_requests_fill_the_context(flask_app, signalbus_capture, signalbus_drain):
    client = flask_app.test_client()
    response = client.post("/comments", data="hi", headers={"X-User": "ada"})
    assert response.status_code == 201
    assert json.loads(response.data) == {"actor": "ada", "path": "/comments"}
    assert client.post("/comments", data="anon").status_code == 201
    assert current_context() == {}  # reset at teardown
    if flask_app.config["SIGNALBUS_DELIVERY"] == "outbox":
        signalbus_drain(flask_app)
    assert [dict(e.context) for e in signalbus_capture.events] == [
        {"actor": "ada", "path": "/comments"}, {"actor": "anonymous", "path": "/comments"}]


def test_flask_context_setting_must_be_callable():
    app = Flask(__name__)
    app.config.update(SIGNALBUS_PLUGINS=[], SIGNALBUS_CONTEXT={"actor": "ada"})
    with pytest.raises(ConfigurationError, match="SIGNALBUS_CONTEXT"):
        signalbus.SignalBus().init_app(app)


def test_flask_context_callable_must_return_a_mapping():
    app = Flask(__name__)
    app.config.update(SIGNALBUS_PLUGINS=[], SIGNALBUS_CONTEXT=lambda: "ada")
    signalbus.SignalBus().init_app(app)
    app.add_url_rule("/", view_func=lambda: "ok")
    app.testing = True
    with pytest.raises(TypeError, match=r"SIGNALBUS_CONTEXT\(\) must return a mapping"):
        app.test_client().get("/")
    assert current_context() == {}
