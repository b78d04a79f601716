"""The audit-table recipe of docs/plugins.md, run as written, in both delivery modes: every
committed event is one row keyed on ``event.id``, and a redelivered event changes nothing."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
from signalbus.plugins import PluginBus, PluginRecord

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def _recipe() -> types.ModuleType:
    section = DOC.read_text().split("## 6. Recipe", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    module = types.ModuleType("acme_audit")
    exec(compile(code, f"{DOC}#recipe", "exec"), module.__dict__)
    return module


@pytest.fixture(params=["inline", "outbox"])
def host(request: pytest.FixtureRequest, fsa_config: dict[str, Any]) -> Iterator[Any]:
    from conftest import start_host  # the root conftest

    audit = _recipe()

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)

    class Member(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "recipe_members"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(String(200))

    audit.include_in(db.metadata)
    signalbus.bind(Member, "insert", "member_joined")
    signalbus.bind(Member, "delete", "member_left")
    app = Flask(__name__)
    app.config.update(fsa_config, SIGNALBUS_PLUGINS=[], SIGNALBUS_DELIVERY=request.param)
    bus = start_host(app, db, fresh=True)
    runtime = bus.runtime(app)
    audit.plugin(PluginBus(runtime, PluginRecord("audit", "acme-audit", "loaded")))
    yield types.SimpleNamespace(app=app, db=db, Member=Member, runtime=runtime,
                                table=audit.audit_log, mode=request.param)
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_every_event_once_even_when_delivered_twice(host: Any, signalbus_capture: Any,
                                                     signalbus_drain: Any) -> None:
    with host.app.app_context():
        ada = host.Member(email="ada@example.com")
        host.db.session.add_all([ada, host.Member(email="bob@example.com")])
        host.db.session.commit()
        host.db.session.delete(ada)
        host.db.session.commit()
    if host.mode == "outbox":
        signalbus_drain(host.app)
    joined = signalbus_capture.of("member_joined")
    assert [e.data["email"] for e in joined] == ["ada@example.com", "bob@example.com"]
    # a redelivery of an event already recorded (what the outbox may do after a crash)
    with host.app.app_context():
        assert host.runtime.deliver(host.Member, joined[0]) == []
        rows = host.db.session.execute(
            select(host.table.c.event_id, host.table.c.signal, host.table.c.op,
                   host.table.c.data).order_by(host.table.c.occurred_at,
                                               host.table.c.signal)).all()
    events = [*joined, *signalbus_capture.of("member_left")]
    assert sorted((r.event_id, r.signal, r.op) for r in rows) == sorted(
        (e.id, e.signal, e.op) for e in events)
    assert {r.data["email"] for r in rows if r.signal == "member_joined"} == {
        "ada@example.com", "bob@example.com"}
