"""The template's test: a real app, a real commit, the shipped ``signalbus_capture``."""

from __future__ import annotations

import logging

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import signalbus
import signalbus.outbox


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "hello_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))


@pytest.fixture(params=["inline", "outbox"])
def app(request, tmp_path):
    """The host app, once with inline delivery and once through the outbox."""
    signalbus.bind(User, "insert", "user_registered")
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'hello.sqlite'}",
        SIGNALBUS_PLUGINS=["hello"],  # only this plugin, whatever else is installed
        SIGNALBUS_HELLO_GREETING="Welcome",
        SIGNALBUS_DELIVERY=request.param,
    )
    db.init_app(app)
    with app.app_context():
        signalbus.sqlite.configure(db.engine)
        db.create_all()
        if request.param == "outbox":
            signalbus.outbox.create_all(db.engine)
    signalbus.SignalBus().init_app(app, db=db)
    yield app
    with app.app_context():
        db.engine.dispose()


def _deliver(app, signalbus_drain):
    """Outbox mode: run the real worker until the outbox is empty (inline: nothing to do)."""
    if app.config["SIGNALBUS_DELIVERY"] == "outbox":
        signalbus_drain(app)


def test_greets_a_registered_user(app, signalbus_capture, signalbus_drain, caplog):
    with caplog.at_level(logging.INFO, logger="signalbus_hello"):
        with app.app_context():
            db.session.add(User(email="ada@example.com"))
            db.session.commit()
        _deliver(app, signalbus_drain)
    event = signalbus_capture.assert_sent("user_registered", email="ada@example.com")
    assert f"Welcome, ada@example.com! (event {event.id})" in caplog.messages


def test_nothing_for_a_rolled_back_registration(app, signalbus_capture, signalbus_drain,
                                                caplog):
    with caplog.at_level(logging.INFO, logger="signalbus_hello"):
        with app.app_context():
            db.session.add(User(email="ghost@example.com"))
            db.session.flush()
            db.session.rollback()
        _deliver(app, signalbus_drain)
    signalbus_capture.assert_not_sent("user_registered")
    assert caplog.messages == []


def test_listed_as_loaded(app):
    (record,) = app.extensions["signalbus"].runtime(app).plugins
    assert (record.name, record.distribution, record.status) == (
        "hello", "signalbus-hello", "loaded")
    assert record.details == ["greets with 'Welcome'"]
