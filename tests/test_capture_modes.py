"""``signalbus_capture`` records the same events in every delivery mode: an event whose
signal has no receiver included, a rolled-back one never."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Account(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "capture_mode_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(50))


@pytest.fixture(params=["inline", "outbox"])
def app(request: pytest.FixtureRequest, fsa_config: dict[str, Any]) -> Iterator[Flask]:
    from conftest import start_host  # the root conftest

    signalbus.bind(Account, "insert", "account_opened")   # no receiver anywhere
    signalbus.signal("account_audited")                   # emitted, no receiver
    app = Flask(__name__)
    app.config.update(fsa_config, SIGNALBUS_PLUGINS=[], SIGNALBUS_DELIVERY=request.param)
    start_host(app, db, fresh=True)
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def test_events_without_receivers_are_recorded_in_every_mode(app, signalbus_capture,
                                                             signalbus_drain):
    with app.app_context():
        db.session.add(Account(id=1, owner="ada"))
        db.session.flush()
        # db.session, the scoped session, is accepted for session=
        signalbus.emit("account_audited", {"id": 1}, session=db.session)
        db.session.commit()
        db.session.add(Account(id=2, owner="ghost"))
        db.session.flush()
        db.session.rollback()
    if app.config["SIGNALBUS_DELIVERY"] == "outbox":
        signalbus_drain(app)
    assert signalbus_capture.names == ["account_opened", "account_audited"]
    assert signalbus_capture.assert_sent("account_opened", owner="ada").pk == 1
